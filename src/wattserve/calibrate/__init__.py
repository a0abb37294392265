"""`calibrate`: fit the model's efficiencies, overheads and power curve to measurements."""

from wattserve.calibrate.fit import FitReport, fit_calibration
from wattserve.calibrate.measurements import Measurement, read_measurements

__all__ = ["FitReport", "Measurement", "fit_calibration", "read_measurements"]
