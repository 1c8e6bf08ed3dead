"""The management UI in a real browser: Debian's headless Chromium driven by
Selenium through Debian's chromedriver (no driver or browser downloads). Only with
--browser (or SMOKE_BROWSER=1)."""

from __future__ import annotations

import base64
import hashlib
import os
import socket
import ssl
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import pytest

from smoke_chromium import flags as chromium_flags
from smoke_errors import fail
from smoke_management import Probe
from smoke_settings import Extras, Target

pytestmark = pytest.mark.browser


def verified_spki_pin(target: Target) -> str:
    """The served certificate's key, after Python verified the certificate against
    SMOKE_CA_FILE and the host name: Chromium (which does not read that CA file)
    trusts exactly this key and nothing else. Read with `cryptography`, which Ansible brings."""
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    host, port = target.management_host, target.management_port
    with (
        socket.create_connection((host, port), timeout=target.timeout) as raw,
        target.ssl_context().wrap_socket(raw, server_hostname=host) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der, f"{host}:{port} presented no certificate"
    key = x509.load_der_x509_certificate(der).public_key()
    spki = key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(hashlib.sha256(spki).digest()).decode()


@pytest.fixture
def browser(extras: Extras, target: Target, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    try:
        from selenium import webdriver
        from selenium.common.exceptions import WebDriverException
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        fail("--browser needs the selenium package in this Python environment")
    for path in (extras.chromium, extras.chromedriver):
        if not os.access(path, os.X_OK):
            fail(f"{path} missing: apt-get install chromium chromium-driver")
    # Explicit paths mean Selenium Manager has nothing to find; offline, it fetches nothing either.
    monkeypatch.setenv("SE_OFFLINE", "true")
    with tempfile.TemporaryDirectory(prefix="smoke-chromium-", ignore_cleanup_errors=True) as profile:
        options = webdriver.ChromeOptions()
        options.binary_location = extras.chromium
        flags = chromium_flags(profile)
        if target.management_tls:
            try:
                flags.append(f"--ignore-certificate-errors-spki-list={verified_spki_pin(target)}")
            except (OSError, ssl.SSLError) as exc:
                fail(f"management UI: {target.management_url} does not verify with SMOKE_CA_FILE: {exc}")
        for flag in flags:
            options.add_argument(flag)
        try:
            driver = webdriver.Chrome(service=Service(executable_path=extras.chromedriver), options=options)
        except WebDriverException as exc:
            fail(f"cannot start {extras.chromium} via {extras.chromedriver}: {exc.msg}")
        driver.set_page_load_timeout(target.timeout)
        driver.set_script_timeout(target.timeout)
        try:
            yield driver
        finally:
            driver.quit()


def _screenshot_path(extras: Extras, target: Target, suffix: str = "") -> Path:
    parts = urlsplit(target.management_url)
    host = parts.hostname or "broker"
    if parts.port and parts.port != 15672:
        host = f"{host}-{parts.port}"
    extras.screenshot_dir.mkdir(parents=True, exist_ok=True)
    return extras.screenshot_dir / f"management-ui-{host}{suffix}.png"


def test_management_ui(browser: Any, target: Target, extras: Extras, broker: Probe, notes: list[str]) -> None:
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(browser, target.timeout)

    def see(condition: Any, what: str) -> Any:
        try:
            return wait.until(condition)
        except TimeoutException:
            shot = _screenshot_path(extras, target, "-failed")
            browser.save_screenshot(str(shot))
            fail(f"management UI: {what} not seen within {target.timeout:g} s (screenshot {shot})")

    browser.get(target.management_url + "/")
    see(ec.visibility_of_element_located((By.NAME, "username")), "the login form").send_keys(target.admin_user)
    browser.find_element(By.NAME, "password").send_keys(target.admin_password)
    browser.find_element(By.CSS_SELECTOR, "#login input[type=submit]").click()

    version = broker.version
    see(ec.text_to_be_present_in_element((By.CSS_SELECTOR, "#main h1"), "Overview"), "the Overview page")
    see(ec.text_to_be_present_in_element((By.TAG_NAME, "body"), version), f"RabbitMQ version {version}")

    browser.find_element(By.CSS_SELECTOR, 'a[href="#/queues"]').click()
    see(ec.url_contains("#/queues"), "the Queues tab")
    for vhost, queue in target.expect_queues:
        link = f'a[href="#/queues/{quote(vhost, safe="")}/{quote(queue, safe="")}"]'
        see(ec.visibility_of_element_located((By.CSS_SELECTOR, link)), f"queue {vhost}:{queue} in the list")

    shot = _screenshot_path(extras, target)
    assert browser.save_screenshot(str(shot)), f"could not write {shot}"
    print(f"management UI screenshot: {shot}")
    notes.append(f"management UI screenshot: {shot.resolve()}")
