"""Where a request comes from and whether it may leave: the `x-wattserve-site` and
`x-wattserve-data-local` headers, read strictly (docs/serve.md). A residency rule that guessed
would let data leave its site, so a value not understood is refused, never read as false."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

# x-wattserve-data-local's spellings, in any case; any other value is refused (fail closed)
TRUE_WORDS = ("1", "true", "yes")
FALSE_WORDS = ("0", "false", "no")
NONE: list[str] = []  # a header not sent (never changed)


@dataclass(frozen=True, slots=True)
class Residency:
    origin: str | None  # the client's site (None: not said)
    local_only: bool  # the request may not leave its site
    slo: str = "default"  # its SLO class (x-wattserve-slo)


@dataclass(frozen=True, slots=True)
class HeaderError:
    """A header not understood: the message of the 400 it answers, and the header."""

    message: str
    header: str


def residency(
    site_values: list[str],
    data_local: list[str],
    sites: Collection[str],
    slo_values: list[str] = NONE,
    slos: Collection[str] = (),
) -> Residency | HeaderError:
    """The request's residency from every `x-wattserve-site` and `x-wattserve-data-local`
    value it sent, checked against the fleet's `sites`, and its SLO class from
    `x-wattserve-slo`: one of `slos` (serve --slos, "default" among them), or, where the
    gateway was given no classes (`slos` empty), any name, served under the default class: as
    simulate refuses a row naming a class its workload's `slos:` block lacks, and serves any
    under the default where the workload has no such block. Each header once: two sites were
    taken as the first, whichever it was, even for a request that must stay local."""
    if len(site_values) > 1:
        return HeaderError("send one x-wattserve-site header, not several", "x-wattserve-site")
    site = site_values[0] if site_values else None
    if site is not None and site not in sites:
        return HeaderError(
            f"x-wattserve-site '{site[:64]}' is not a site of this fleet ({', '.join(sites)})",
            "x-wattserve-site",
        )
    local = _data_local(data_local)
    if isinstance(local, HeaderError):
        return local
    if local and site is None:
        return HeaderError(
            "x-wattserve-data-local keeps a request at its site: name the site in x-wattserve-site",
            "x-wattserve-site",
        )
    if len(slo_values) > 1:
        return HeaderError("send one x-wattserve-slo header, not several", "x-wattserve-slo")
    slo = slo_values[0].strip(" \t") if slo_values else "default"  # HTTP's spaces, no more
    if slos and slo not in slos:
        return HeaderError(
            f"x-wattserve-slo '{slo[:64]}' is not an SLO class of this gateway ({', '.join(slos)})",
            "x-wattserve-slo",
        )
    return Residency(site, local, slo)


def _data_local(values: list[str]) -> bool | HeaderError:
    """True or False (absent: False), or the error for a value not understood."""
    if not values:
        return False
    if len(values) > 1:
        return HeaderError(
            "send one x-wattserve-data-local header, not several", "x-wattserve-data-local"
        )
    word = values[0].strip(" \t").lower()  # HTTP's spaces, as x-wattserve-slo
    if word in TRUE_WORDS or word in FALSE_WORDS:
        return word in TRUE_WORDS
    return HeaderError(
        f"x-wattserve-data-local must be one of {', '.join(TRUE_WORDS + FALSE_WORDS)} (any "
        f"case), not '{values[0][:32]}'",
        "x-wattserve-data-local",
    )
