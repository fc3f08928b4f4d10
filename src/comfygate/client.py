"""A minimal HTTP client for the command line (standard library only)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

__all__ = ["ApiClient"]


class ApiClient:
    def __init__(self, base_url: str, api_key: str, timeout: float = 120.0) -> None:
        if not api_key:
            raise SystemExit("no API key: pass --key or set COMFYGATE_API_KEY")
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self.timeout = timeout

    def post(self, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        request = urllib.request.Request(
            self.base_url + path, data=json.dumps(body).encode(), method="POST",
            headers={"Authorization": f"Bearer {self.api_key}", "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return response.status, json.loads(response.read() or b"{}")
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"{}")
        except urllib.error.URLError as exc:
            raise SystemExit(f"cannot reach {self.base_url}: {exc.reason}") from exc
