"""The Arrow-backed patient-timeline store (design §2)."""

from clinseq.timeline.records import Recording
from clinseq.timeline.store import PatientTimeline, TimelineStore
from clinseq.timeline.write_store import ArrayRecording, write_store
from clinseq.timeline.writer import StoreWriter

__all__ = ["ArrayRecording", "PatientTimeline", "Recording", "StoreWriter", "TimelineStore", "write_store"]
