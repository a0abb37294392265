"""The live gauges of a gateway's `/metrics`: read from the router and the shared state at
each scrape (counters and histograms are `Metrics`' own)."""

from __future__ import annotations

from wattserve.serve.router import Router
from wattserve.serve.state import SharedState

Gauge = tuple[str, str, dict[str, str], float]  # name, help, labels, value


def live_gauges(router: Router, state: SharedState | None, in_flight: int) -> list[Gauge]:
    """The gauges `/metrics` reads at each scrape: site power and caps, backends' health,
    emulated engines' device time and power stretch, requests in flight, the shared state."""
    out: list[Gauge] = []
    for name, acct in router.gov.sites.items():
        out.append(
            (
                "wattserve_site_power_watts",
                "Power drawn now, by site (W).",
                {"site": name},
                acct.power_w,
            )
        )
        if acct.cap_w is not None:
            out.append(
                (
                    "wattserve_site_power_cap_watts",
                    "Power cap, by site (W).",
                    {"site": name},
                    acct.cap_w,
                )
            )
    for b in router.backends.values():
        out.append(
            (
                "wattserve_backend_up",
                "1 if the backend is healthy, by backend and its site.",
                {"backend": b.name, "site": b.site},
                1.0 if b.healthy else 0.0,
            )
        )
        if b.device_s is not None:  # an emulated engine: its steps' device time
            labels = {"backend": b.name, "site": b.site}
            out.append(
                (
                    "wattserve_engine_device_seconds",
                    "Device time of an emulated engine's steps so far, running or waiting for "
                    "power, by backend and its site.",
                    labels,
                    b.device_s,
                )
            )
            out.append(
                (
                    "wattserve_engine_power_stretch",
                    "Device time of an emulated engine's recent steps over their time at full "
                    "power, by backend and its site.",
                    labels,
                    b.stretch(),
                )
            )
    out.append(("wattserve_in_flight_requests", "Requests in flight.", {}, float(in_flight)))
    if state is not None:
        st = state
        for name, help_, value in (
            ("wattserve_state_up", "1 if the shared state (Redis) answers.", st.up),
            ("wattserve_state_replicas", "Live gateway replicas.", st.replicas),
            ("wattserve_state_lost_total", "Times the shared state was lost.", st.lost_total),
            (
                "wattserve_state_data_lost_total",
                "Times the shared state was found to have lost its data (a new epoch).",
                st.reset_total,
            ),
            ("wattserve_state_pending_settlements", "Settlements queued.", len(st.pending)),
        ):
            out.append((name, help_, {}, float(value)))
    return out
