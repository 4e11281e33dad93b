"""What `make run` leaves out (the `vertex` extra) fails with one line saying what to install, not a traceback."""

from __future__ import annotations

import sys

import pytest

from engine.errors import UserError


@pytest.mark.parametrize("module", ["google.genai", "google"])
def test_vertex_backend_without_the_google_clients_says_what_to_install(monkeypatch, module):
    from engine.llm.vertex import VertexBackend

    monkeypatch.setitem(sys.modules, module, None)  # as if not installed: import and find_spec see nothing
    with pytest.raises(UserError, match=r"google-genai.*pip install -e \"\.\[vertex\]\""):
        VertexBackend("gemini-3-flash", project="p")


def test_vertex_batch_without_the_cloud_client_says_what_to_install(monkeypatch):
    from engine.llm import vertex_batch

    monkeypatch.setitem(sys.modules, "google.cloud.aiplatform", None)
    with pytest.raises(UserError, match=r"google-cloud-aiplatform.*\[vertex\]"):
        vertex_batch._services()
