"""Reading a Prometheus scrape the way Prometheus does (prometheus-client's own parser)."""
from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families


class Scrape:
    """The samples of one scrape: `value` of one series, `total` over every series that matches."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.samples: dict[tuple[str, frozenset], float] = {}
        self.types: dict[str, str] = {}
        for family in text_string_to_metric_families(text):
            self.types[family.name] = family.type
            for sample in family.samples:
                self.samples[(sample.name, frozenset(sample.labels.items()))] = sample.value

    def total(self, name: str, **labels: str) -> float:
        """The sum of every sample named `name` whose labels include `labels` (0 when none)."""
        wanted = set(labels.items())
        return sum(v for (n, ls), v in self.samples.items() if n == name and wanted <= ls)

    def has(self, name: str) -> bool:
        return any(n == name for n, _ in self.samples)

    def labels(self, name: str, label: str) -> set[str]:
        return {dict(ls)[label] for n, ls in self.samples if n == name and label in dict(ls)}

    def minus(self, before: "Scrape", name: str, **labels: str) -> float:
        """How much `total(name, **labels)` grew since `before`."""
        return self.total(name, **labels) - before.total(name, **labels)
