"""Tolerant reading of request bodies and the API error raised when a field is bad.

DhanHQ's docs show numbers sent as strings (``"quantity": "5"``, ``"price": ""``) while the SDK
sends real numbers; both are accepted. Rupee amounts become exact paise.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

from shared.types import rupees_to_paise

from .decisions import ERRORS


class ApiError(Exception):
    """A REST answer other than success: trading body (``DH-9xx``) or data body (8xx codes)."""

    def __init__(self, code: str, message: str | None = None, *, status: int | None = None):
        self.code = code
        if code.startswith("DH-"):
            error_type, default_status, default_message = ERRORS[code]
            self.error_type = error_type
            self.status = status or default_status
            self.message = message or default_message
        else:  # a data-API code such as "811"
            self.error_type = ""
            self.status = status or 400
            self.message = message or "Invalid request"
        super().__init__(f"{code}: {self.message}")

    def body(self) -> dict[str, Any]:
        if self.code.startswith("DH-"):
            return {
                "errorType": self.error_type,
                "errorCode": self.code,
                "errorMessage": self.message,
            }
        return {"data": {self.code: self.message}, "status": "failed"}


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and value.strip() == "")


def get_str(body: dict[str, Any], key: str, *, required: bool = False, default: str = "") -> str:
    value = body.get(key)
    if _blank(value):
        if required:
            raise ApiError("DH-905", f"Missing required field: {key}")
        return default
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ApiError("DH-905", f"Invalid value for {key}: {value!r}")
    return str(value).strip()


def get_enum(body: dict[str, Any], key: str, allowed: tuple[str, ...], *, default: str = "") -> str:
    value = get_str(body, key, required=not default, default=default).upper()
    if value not in allowed:
        raise ApiError("DH-905", f"Invalid value for {key}: {value!r}; expected one of {allowed}")
    return value


def get_int(
    body: dict[str, Any], key: str, *, required: bool = False, default: int = 0, minimum: int = 0
) -> int:
    value = body.get(key)
    if _blank(value):
        if required:
            raise ApiError("DH-905", f"Missing required field: {key}")
        return default
    try:
        if isinstance(value, bool):
            raise ValueError
        number = Decimal(str(value).strip())
        if number != number.to_integral_value():
            raise ValueError
        result = int(number)
    except (ValueError, InvalidOperation):
        raise ApiError("DH-905", f"Invalid value for {key}: {value!r}") from None
    if result < minimum:
        raise ApiError("DH-905", f"Invalid value for {key}: {value!r} (minimum {minimum})")
    return result


def get_paise(body: dict[str, Any], key: str, *, required: bool = False) -> int:
    """A rupee amount (number or numeric text) as exact paise; blank → 0."""
    value = body.get(key)
    if _blank(value):
        if required:
            raise ApiError("DH-905", f"Missing required field: {key}")
        return 0
    try:
        if isinstance(value, bool):
            raise ValueError
        paise = rupees_to_paise(str(value).strip())
    except (ValueError, InvalidOperation):
        raise ApiError("DH-905", f"Invalid value for {key}: {value!r}") from None
    if paise < 0:
        raise ApiError("DH-905", f"Invalid value for {key}: {value!r}")
    return paise


def get_bool(body: dict[str, Any], key: str) -> bool:
    value = body.get(key)
    if isinstance(value, str):
        return value.strip().lower() in ("true", "1", "yes")
    return bool(value)


def rupees(paise: int | float) -> float:
    """Paise as a rupee float for JSON (152.3 for 15230)."""
    return round(paise / 100, 6)
