"""`POST /v1/fleet` bodies (admin): drain or undrain a target, set or lift a site's power cap.
Validated like the request schema: strict types, finite numbers, and a cap no lower than the
idle draw of the site's devices (the rule the fleet-file loader applies)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from wattserve.core.sites import MAX_POWER_W
from wattserve.serve.schema import validation_message

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


def check_cap(change: CapChange, sites: set[str], idle_w: float) -> None:
    """Refuse a cap for an unknown site (404) or below the site's idle draw (400)."""
    if change.site not in sites:
        raise ChangeError(404, f"no site '{change.site}'", "site")
    if change.power_cap_w is not None and change.power_cap_w <= idle_w:  # nothing above idle
        raise ChangeError(
            400,
            f"power_cap_w {change.power_cap_w:g} W is not above the {idle_w:.0f} W the devices at "
            f"{change.site} draw idle: no request could ever run; raise it or drain targets",
            "power_cap_w",
        )
