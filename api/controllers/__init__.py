"""REST controllers: thin (parse, call storage in one transaction, return dataclasses)."""

from api.controllers.alerts import AlertController
from api.controllers.devices import DeviceController
from api.controllers.guards import GuardController
from api.controllers.system import SystemController
from api.controllers.zones import ZoneController

__all__ = [
    "AlertController",
    "DeviceController",
    "GuardController",
    "SystemController",
    "ZoneController",
]
