// fhir-kit-client, unmodified, against a live CareHub. Usage:
//   node fhir-kit.mjs <fhir base> <client assertion JSON file> <work JSON file>
// Prints one JSON object of what it saw; the Python test judges it. Any error exits 1.
import { readFileSync } from 'node:fs';
import { Client } from 'fhir-kit-client';

const [base, assertionFile, workFile] = process.argv.slice(2);
const { assertion } = JSON.parse(readFileSync(assertionFile, 'utf8'));
const work = JSON.parse(readFileSync(workFile, 'utf8'));
const client = new Client({ baseUrl: base });
const seen = {};

// token: the library discovers the token endpoint; we trade our signed assertion there
const auth = await client.smartAuthMetadata();
seen.tokenUrl = auth.tokenUrl;
const capability = await client.capabilityStatement();
seen.securityServices = capability.rest[0].security.service.flatMap((s) => s.coding.map((c) => c.code));
const form = new URLSearchParams({
  grant_type: 'client_credentials', scope: 'system/*.*',
  client_assertion_type: 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer',
  client_assertion: assertion,
});
const tokenResponse = await fetch(auth.tokenUrl, { method: 'POST', body: form });
if (!tokenResponse.ok) throw new Error(`token: ${tokenResponse.status} ${await tokenResponse.text()}`);
client.bearerToken = (await tokenResponse.json()).access_token;

// create
seen.created = [];
for (const patient of work.patients) {
  const made = await client.create({ resourceType: 'Patient', body: patient });
  seen.created.push(made.id);
}

// search with paging to the end
seen.searched = [];
seen.pages = 0;
let bundle = await client.search({ resourceType: 'Patient', searchParams: { family: work.family, _count: 2 } });
while (bundle && seen.pages < 20) {
  seen.pages += 1;
  seen.searched.push(...(bundle.entry || []).filter((e) => e.search.mode === 'match').map((e) => e.resource.id));
  bundle = await client.nextPage({ bundle });
}

// count
const counted = await client.search({ resourceType: 'Patient', searchParams: { family: work.family, _summary: 'count' } });
seen.total = counted.total;

// read and update
const first = await client.read({ resourceType: 'Patient', id: seen.created[0] });
first.name[0].given = ['Kari', 'Ane'];
const updated = await client.update({ resourceType: 'Patient', id: first.id, body: first });
seen.updatedVersion = updated.meta.versionId;

// conditional create, twice: one resource
const headers = { 'If-None-Exist': work.criteria };
const c1 = await client.create({ resourceType: 'Patient', body: work.conditional, options: { headers } });
const c2 = await client.create({ resourceType: 'Patient', body: work.conditional, options: { headers } });
seen.conditional = [c1.id, c2.id];

// transaction
const answer = await client.transaction({ body: work.transaction });
seen.transaction = answer.entry.map((e) => e.response.status);

// $process-message
const response = await client.operation({ name: 'process-message', method: 'POST', input: work.message });
seen.messageResponse = response.entry[0].resource.response;

// JSON Patch
const patched = await client.patch({ resourceType: 'Patient', id: first.id, jsonPatch: [{ op: 'replace', path: '/gender', value: 'male' }] });
seen.patch = [patched.gender, patched.meta.versionId];

console.log(JSON.stringify(seen));
