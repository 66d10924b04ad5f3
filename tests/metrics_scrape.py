"""One /metrics scrape of a running runtap, read the way a test asserts on it."""

from __future__ import annotations

import aiohttp
from prometheus_client.parser import text_string_to_metric_families


class Scrape:
    """One /metrics scrape: every sample as (name, labels) -> value."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.samples: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                self.samples[(s.name, frozenset(s.labels.items()))] = s.value

    def get(self, name: str, **labels: str) -> float:
        """Sum of the samples of `name` whose labels include `labels`."""
        want = set(labels.items())
        return sum(v for (n, ls), v in self.samples.items() if n == name and want <= ls)

    def by(self, name: str, *keys: str, **labels: str) -> dict[tuple[str, ...], float]:
        out: dict[tuple[str, ...], float] = {}
        want = set(labels.items())
        for (n, ls), v in self.samples.items():
            if n == name and want <= ls and v:
                d = dict(ls)
                key = tuple(d.get(k, "") for k in keys)
                out[key] = out.get(key, 0.0) + v
        return out

    def label_values(self) -> set[str]:
        return {v for (_, ls) in self.samples for _, v in ls}


async def scrape(admin_url: str, accept: str | None = None) -> Scrape:
    headers = {"Accept": accept} if accept else {}
    async with aiohttp.ClientSession() as s, s.get(admin_url + "/metrics", headers=headers) as r:
        assert r.status == 200
        return Scrape(await r.text())
