"""/ui in a real browser: headless Chromium driven by Selenium against the hub served by
uvicorn, signing in through the sign-in form as each role, checking every page with axe-core
(no serious or critical violation) and keeping a screenshot of each page in var/screenshots/.

Needs Debian's `chromium` and `chromium-driver` and axe-core (npm); scripts/test.sh installs
them when missing. Without them the tests are skipped, except under CI (CI=1), where they fail.
Runs on SQLite only: what is tested is the pages, and the database tests run on both.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from selenium import webdriver
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.wait import WebDriverWait

from hub.auth.subject import Subject
from hub.db.engine import Database
from hub.demo.scenario import KARI, KLEPP, OLA
from hub.fhir.identifiers import FNR_SYSTEM
from hub.store import service
from tests.ui.conftest import PASSWORD, SHARED_FNR, make_dead_letter, make_user

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / "var" / "screenshots"
AXE = Path(os.environ.get("HUB_TEST_AXE", ROOT / "var" / "npm" / "node_modules" / "axe-core"
                          / "axe.min.js"))
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--window-size=1280,1000")


@pytest.fixture
def db_url(tmp_path: Path, sqlite_template: Path) -> str:
    """SQLite only (see the module's docstring)."""
    path = tmp_path / "hub.db"
    shutil.copy(sqlite_template, path)
    return f"sqlite:///{path}"


def _missing(why: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"{why} (scripts/test.sh installs it)")
    pytest.skip(why)


@pytest.fixture(scope="module")
def chrome() -> Iterator[WebDriver]:
    """Headless Chromium with a fresh profile."""
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_path = shutil.which("chromedriver")
    if binary is None or driver_path is None:
        _missing("chromium and chromedriver are not installed")
    if not AXE.is_file():
        _missing(f"axe-core is not installed ({AXE})")
    assert binary is not None
    assert driver_path is not None
    profile = tempfile.mkdtemp(prefix="carehub-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in (*FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    driver.set_page_load_timeout(30)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


class Browser:
    """One person at the hub in Chromium: sign in, open pages, check and keep each page."""

    def __init__(self, driver: WebDriver, base: str, test: str) -> None:
        self.driver, self.base, self.test = driver, base, test
        driver.delete_all_cookies()

    def open(self, path: str) -> None:
        self.driver.get(self.base + path)

    def follow(self, element: WebElement) -> None:
        """Click a link or button and wait for the next page to load.

        The old page is marked in its window object and the wait is for a complete document
        without the mark. Waiting for the old <html> element to go stale raced with
        Chromium: asked about a node in the middle of navigation, chromedriver may answer
        "Node with given id does not belong to the document", which Selenium does not count
        as stale (a CI run failed on it).
        """
        self.driver.execute_script("window.carehubOldPage = true;")
        element.click()
        WebDriverWait(self.driver, 30, ignored_exceptions=(WebDriverException,)).until(
            lambda driver: driver.execute_script(
                "return window.carehubOldPage === undefined"
                " && document.readyState === 'complete';"))

    def sign_in(self, username: str) -> None:
        """Through the real sign-in form."""
        self.open("/ui/sign-in")
        self.driver.find_element(By.ID, "username").send_keys(username)
        self.driver.find_element(By.ID, "password").send_keys(PASSWORD)
        self.follow(self.driver.find_element(By.CSS_SELECTOR, "form button[type=submit]"))
        assert self.driver.current_url.rstrip("/").endswith("/ui"), self.driver.current_url

    def language(self, code: str) -> None:
        """Choose a language with the header's switch."""
        self.follow(self.driver.find_element(By.CSS_SELECTOR, f'header nav a[lang="{code}"]'))

    @property
    def text(self) -> str:
        return str(self.driver.find_element(By.TAG_NAME, "body").text)

    def check(self, name: str) -> None:
        """No serious or critical axe-core violation; a full-page screenshot kept."""
        self.driver.execute_script(AXE.read_text(encoding="utf-8"))
        result: list[dict[str, Any]] = self.driver.execute_async_script(
            "const done = arguments[arguments.length - 1];"
            "axe.run(document, {resultTypes: ['violations']})"
            ".then(r => done(r.violations)).catch(e => done([{id: 'axe-error', "
            "impact: 'critical', help: String(e), nodes: []}]));")
        bad = [f"{v['id']} ({v['impact']}): {v['help']} at "
               f"{[n.get('target') for n in v.get('nodes', [])][:3]}"
               for v in result if v.get("impact") in ("serious", "critical")]
        height = self.driver.execute_script("return document.documentElement.scrollHeight")
        self.driver.set_window_size(1280, max(800, min(int(height) + 40, 6000)))
        self.driver.save_screenshot(str(SCREENSHOTS / f"{self.test}-{name}.png"))
        self.driver.set_window_size(1280, 1000)
        assert bad == [], f"{name}: {bad}"


def _patient_id(database: Database, number: str) -> str:
    with database.session(write=False) as s:
        [found] = service.find_by_identifier(s, Subject.hub_itself(), system=FNR_SYSTEM,
                                             value=number, resource_types=frozenset({"Patient"}))
        return found.id


def test_an_auditor_finds_the_person_and_sees_each_recipient_and_basis(
        shared_story: Any, database: Database, live_url: str, chrome: WebDriver) -> None:
    person = _patient_id(database, SHARED_FNR)
    b = Browser(chrome, live_url, "auditor")
    b.sign_in("revisor")
    b.check("home-nb")
    chrome.find_element(By.ID, "number").send_keys(SHARED_FNR)
    b.follow(chrome.find_element(By.CSS_SELECTOR, "main form button[type=submit]"))
    assert chrome.current_url.endswith(f"/ui/audit/people/{person}")
    assert "Utleveringslogg" in b.text
    rows = [r.text for r in chrome.find_elements(
        By.CSS_SELECTOR, "section[aria-labelledby=messages-heading] tbody tr")]
    assert any("Time kommune" in r and "Samtykke (versjon 1)" in r
               and "Individuell plan delt" in r for r in rows), rows
    # the admission notice rests on the consent, which permits all of it; the answers back
    # to the centre on the legal basis reply
    assert any("Time kommune" in r and "Samtykke (versjon 1)" in r
               and "Innleggelsesmelding" in r for r in rows), rows
    assert any("Jæren DPS" in r and "Et svar på det mottakeren sendte (reply)" in r
               for r in rows), rows
    assert any("Jæren DPS" in r and "Svar på møteinnkalling" in r for r in rows), rows
    b.check("disclosure-log-nb")
    # the basis links to the consent's version in the timeline
    chrome.find_element(By.PARTIAL_LINK_TEXT, "Samtykke (versjon 1)").click()  # same page
    assert "#Consent-" in chrome.current_url
    b.language("en")
    assert "Receiving organisation" in b.text
    b.check("disclosure-log-en")
    b.open("/ui/audit/people?name=Kari+Nordmann&born=1969-11-13")
    assert "People found" in b.text
    b.check("find-person-en")
    b.open(f"/ui/audit/people/{person}/innsyn")
    assert "Hvem har fått og lest hva om deg" in b.text  # bokmål whatever the auditor reads
    b.check("innsyn-nb")
    b.open("/ui/audit")
    b.check("audit-trail-en")


def test_a_coordinator_of_another_municipality_sees_nothing_without_consent(
        told: Any, database: Database, live_url: str, chrome: WebDriver) -> None:
    kari = _patient_id(database, KARI.fnr)
    make_dead_letter(database, "ready-for-discharge", KLEPP)
    b = Browser(chrome, live_url, "klepp")
    b.sign_in("koordinator.klepp")
    assert KARI.family not in b.text
    dead = chrome.find_element(By.ID, "dead-letters").text
    assert "Utskrivningsklar pasient" in dead
    assert OLA.name in dead
    assert "Meldingen kom aldri fram" in b.text  # on the discharge it holds up
    b.check("home-nb")
    b.follow(chrome.find_element(By.CSS_SELECTOR, "#dead-letters form button"))
    assert "Meldingen står i kø igjen" in b.text
    b.check("replayed-nb")
    b.open(f"/ui/people/{kari}")
    assert "Vises ikke for deg" in b.text
    for secret in (KARI.family, "deltidsjobb", KARI.fnr[:6]):
        assert secret not in b.text
    b.check("person-hidden-nb")


def test_the_persons_page_shows_the_goals_in_the_persons_words(
        told: Any, database: Database, live_url: str, chrome: WebDriver) -> None:
    b = Browser(chrome, live_url, "time")
    b.sign_in("koordinator.time")
    assert f"{KARI.fnr[:6]} *****" in b.text
    b.check("home-nb")
    b.follow(chrome.find_element(By.LINK_TEXT, KARI.name))
    assert "/ui/people/" in chrome.current_url
    text = b.text
    assert "«Komme tilbake i deltidsjobb i butikken innen sommeren»" in text
    assert "med personens egne ord" in text
    assert "Personen var med på å lage planen." in text
    assert "Jeg vil snakke om å begynne å jobbe igjen." in text
    b.check("person-nb")
    b.language("en")
    assert "in the person's own words" in b.text
    b.check("person-en")
    b.open("/ui")
    b.check("home-en")


def test_both_languages_render_the_sign_in_and_the_admin_pages(
        database: Database, live_url: str, chrome: WebDriver) -> None:
    make_user(database, "admin", role="admin")
    b = Browser(chrome, live_url, "admin")
    b.open("/ui/sign-in")
    assert "Logg inn" in b.text
    assert chrome.find_element(By.TAG_NAME, "html").get_attribute("lang") == "nb"
    b.check("sign-in-nb")
    b.language("en")
    assert chrome.find_element(By.TAG_NAME, "html").get_attribute("lang") == "en"
    assert "Username" in b.text
    b.check("sign-in-en")
    b.sign_in("admin")
    assert "Users" in b.text
    b.check("home-en")
    b.language("nb")
    assert "Brukere" in b.text
    b.check("home-nb")
