"""The Arrow-backed patient-timeline store (design §2)."""

from clinseq.timeline.records import Recording
from clinseq.timeline.store import PatientTimeline, TimelineStore
from clinseq.timeline.writer import StoreWriter

__all__ = ["PatientTimeline", "Recording", "StoreWriter", "TimelineStore"]
