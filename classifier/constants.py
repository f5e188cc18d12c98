"""Shared constants of the classifier: classes, model rate and window geometry."""

from __future__ import annotations

from typing import Final, Literal

EventType = Literal["AF", "VTACH", "PAUSE", "NORMAL"]

#: Class order of the model's output layer. Changing it invalidates trained weights.
CLASSES: Final[tuple[EventType, ...]] = ("NORMAL", "AF", "VTACH", "PAUSE")

#: The model sees every input resampled to this rate (Hz). svdb is recorded at 128 Hz,
#: so the largest training database needs no resampling at all.
MODEL_FS: Final[float] = 128.0

#: One model segment, in seconds. Long inputs are scanned in segments of this length.
SEGMENT_S: Final[float] = 10.0
SEGMENT_LEN: Final[int] = int(MODEL_FS * SEGMENT_S)

#: Longest input the classifier accepts in one call (seconds) and the shortest it judges.
MAX_WINDOW_S: Final[float] = 90.0
MIN_WINDOW_S: Final[float] = 10.0

#: Default R-R gap (seconds) that counts as a pause.
PAUSE_THRESHOLD_S: Final[float] = 3.0

#: Alarm priority by event, used to pick one label when a window holds several events.
EVENT_PRIORITY: Final[dict[str, int]] = {"VTACH": 3, "PAUSE": 2, "AF": 1, "NORMAL": 0}
