"""`POST /v1/fleet` bodies (admin): drain or undrain a target, set or lift a site's power cap.
Validated like the request schema: strict types, finite numbers, and a cap above the idle draw
of the site's devices (the rule the fleet-file loader applies) by at least what one request adds
on the site's least hungry deployment (below that, admission would let no request run)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from wattserve.core.sites import MAX_POWER_W
from wattserve.serve.schema import validation_message

if TYPE_CHECKING:
    from wattserve.serve.router import Router

STRICT = ConfigDict(extra="forbid", strict=True)


class DrainChange(BaseModel):
    model_config = STRICT
    action: Literal["drain", "undrain"]
    target: str = Field(min_length=1, max_length=256)


class CapChange(BaseModel):
    model_config = STRICT
    action: Literal["set_cap"]
    site: str = Field(min_length=1, max_length=256)
    # a fleet file's bound (core.sites.MAX_POWER_W): 1e13 W was taken here and refused there
    power_cap_w: float | None = Field(gt=0.0, le=MAX_POWER_W, allow_inf_nan=False)


class ChangeError(Exception):
    """A change that cannot be made: HTTP status, message and the field at fault."""

    def __init__(self, status: int, message: str, param: str | None) -> None:
        super().__init__(message)
        self.status, self.message, self.param = status, message, param


def parse_change(body: Any) -> DrainChange | CapChange:
    """The change a body asks for, or ChangeError(400) naming the field."""
    if not isinstance(body, dict):
        raise ChangeError(400, "body must be a JSON object", None)
    action = body.get("action")
    model: type[DrainChange] | type[CapChange]
    if action in ("drain", "undrain"):
        model = DrainChange
    elif action == "set_cap":
        model = CapChange
    else:
        raise ChangeError(400, "action must be drain, undrain or set_cap", "action")
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        message, param = validation_message(exc)
        raise ChangeError(400, message, param) from None


def idle_w(router: Router, site: str) -> float:
    """Idle draw of a site's devices: the floor the fleet-file loader puts under its cap."""
    deps = [d for d in router.fleet.deployments if d.site == site]
    total = sum(d.replicas * d.perf.idle_power_w for d in deps)
    return total if math.isfinite(total) else 0.0


def one_request_w(router: Router, site: str) -> tuple[float, str] | None:
    """The least power one request adds at `site`, and the deployment where: the figure
    admission weighs a first request by (EnginePool.first_request_w for an idle replica, a
    server's UpstreamTarget.first_request_w). None when it is not known: no deployment there,
    or one whose draw is unknown (0, a device without power figures, or a hosted API whose
    power no site here draws), which admission lets any request onto."""
    draws = [
        (getattr(t, "first_request_w", t.max_marginal_w), name)
        for name, t in router.targets.items()
        if t.site == site
    ]
    if not draws or any(not (w > 0 and math.isfinite(w)) for w, _ in draws):
        return None
    return min(draws)


def check_cap(change: CapChange, router: Router) -> None:
    """Refuse a cap for an unknown site (404), at or below the site's idle draw (400), or
    below the least that lets one request run there (400, naming that least)."""
    site, cap = change.site, change.power_cap_w
    if site not in router.gov.sites:
        raise ChangeError(404, f"no site '{site}'", "site")
    if cap is None:
        return
    idle = idle_w(router, site)
    if cap <= idle:  # nothing above idle
        raise ChangeError(
            400,
            f"power_cap_w {cap:g} W is not above the {idle:.0f} W the devices at {site} draw "
            "idle: no request could ever run; raise it or drain targets",
            "power_cap_w",
        )
    one = one_request_w(router, site)
    if one is not None and cap < idle + one[0]:
        least = math.ceil((idle + one[0]) * 10) / 10  # rounded up: the cap given lets one run
        raise ChangeError(
            400,
            f"power_cap_w {cap:g} W lets no request run at {site}: one request on '{one[1]}' "
            f"adds {one[0]:.1f} W to the {idle:.1f} W its devices draw idle; the least cap that "
            f"lets one run is {least:.1f} W",
            "power_cap_w",
        )
