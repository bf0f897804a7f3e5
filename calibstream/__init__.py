"""calibstream: calibration of characterized telescope exposures (LSST's CalibrateTask).

The science core: pure functions over numpy arrays and dataclasses. Nothing
in this package imports Kafka, faust or Redis; the streaming layers
(``streams``, ``agents``) adapt events to it.
"""

__version__ = "0.1.0"
