"""The progress page when its live stream drops: in a real Chromium, the connection to the web
server is cut (a TCP proxy in front of uvicorn drops every connection and refuses new ones) while
the pipeline moves on. The page says "Connection lost, reconnecting", and once the network is
back it reconnects by itself, hides the notice and shows the stage it missed, on the same
document (no reload)."""

from __future__ import annotations

import socket
import threading
from urllib.parse import urlparse

import pytest
from django.contrib.auth import get_user_model
from django.db import connection

from onboarding.models import Membership, Repository, Team
from pipeline import transitions
from pipeline.status import PipelineStatus
from tests.conftest import finish_stages

pytestmark = [pytest.mark.browser, pytest.mark.timeout(300)]

PASSWORD = "a long enough passphrase"


class CuttableProxy:
    """127.0.0.1:<port> forwarded to a target port; ``cut()`` drops every connection and closes
    new ones at once until ``restore()``."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.up = threading.Event()
        self.up.set()
        self.lock = threading.Lock()
        self.sockets: set[socket.socket] = set()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if not self.up.is_set():
                client.close()
                continue
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port))
            except OSError:
                client.close()
                continue
            with self.lock:
                self.sockets |= {client, upstream}
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            self._drop(src, dst)

    def _drop(self, *sockets: socket.socket) -> None:
        with self.lock:
            for sock in sockets:
                self.sockets.discard(sock)
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                sock.close()

    def cut(self) -> None:
        self.up.clear()
        with self.lock:
            sockets = list(self.sockets)
        self._drop(*sockets)

    def restore(self) -> None:
        self.up.set()

    def close(self) -> None:
        self.listener.close()
        self.cut()


@pytest.fixture
def proxy(asgi_server):
    proxy = CuttableProxy(urlparse(asgi_server.url).port)
    yield proxy
    proxy.close()


@pytest.fixture
def running_pipeline(transactional_db):
    team = Team.objects.create(name="Flaky Wifi Co")
    user = get_user_model().objects.create_user("wanda", "wanda@example.com", PASSWORD)
    Membership.objects.create(team=team, user=user, role=Membership.Role.ADMIN)
    repository = Repository.objects.create(team=team, github_id=7, full_name="wifi/api")
    return transitions.start_pipeline(team, [repository.pk])


def hand_off_sync(run) -> None:
    """The worker's hand-off, done in another thread (Playwright's loop owns this one)."""

    def work() -> None:
        try:
            finish_stages(run, [PipelineStatus.SYNCING])
        finally:
            connection.close()

    thread = threading.Thread(target=work)
    thread.start()
    thread.join(30)


def test_a_dropped_stream_says_reconnecting_then_resyncs_by_itself(
    running_pipeline, proxy, browser_page, screenshot
):
    page = browser_page
    base = f"http://127.0.0.1:{proxy.port}"
    page.goto(f"{base}/accounts/login/?next=/progress/")
    page.fill("#id_username", "wanda")
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{base}/progress/")
    page.evaluate("window.__sameDocument = 'yes'")
    page.locator("#progress-live[data-live=on]").wait_for(state="attached")
    notice = page.locator("[data-connection-lost]")
    assert not notice.is_visible()
    assert page.locator("[data-stage=syncing]").get_attribute("data-state") == "running"

    proxy.cut()
    notice.wait_for(state="visible", timeout=30_000)
    assert notice.inner_text().startswith("Connection lost, reconnecting")
    screenshot("20-progress-connection-lost")
    hand_off_sync(running_pipeline)  # its NOTIFY reaches no open stream

    proxy.restore()
    page.locator("[data-stage=syncing][data-state=done]").wait_for(timeout=60_000)
    notice.wait_for(state="hidden", timeout=30_000)
    assert page.locator("#progress-live").get_attribute("data-live") == "on"
    assert page.evaluate("window.__sameDocument") == "yes"
    screenshot("21-progress-reconnected")
