"""The notice a parent is given before a profile's data is purged for inactivity (made by
edge.retention.inactivity; shown by status, doctor and the report)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from edge.instants import iso_utc


@dataclass(frozen=True)
class Notice:
    """A profile whose data will be purged for inactivity soon, and what keeps it."""

    profile: str
    heard: datetime
    """When it was last heard (its latest session, its enrolment, or a parent's `profile keep`)."""
    purge: datetime
    """When its data and voiceprint go (earlier than now: at the next sweep)."""
    sessions: int
    """Sessions whose audio or transcript would go then."""
    voiceprint: bool

    def sentence(self) -> str:
        what = [f"the data of {self.sessions} session(s)"] if self.sessions else []
        what += ["its voiceprint"] if self.voiceprint else []
        return (
            f"{self.profile}: unheard since {iso_utc(self.heard)}; {' and '.join(what)} will be purged at {iso_utc(self.purge)} "
            f"for inactivity, unless {self.profile} speaks or a parent runs `edge-agent profile keep {self.profile}`"
        )

    def to_json(self) -> dict[str, object]:
        return {
            "profile": self.profile,
            "heard": iso_utc(self.heard),
            "purge": iso_utc(self.purge),
            "sessions": self.sessions,
            "voiceprint": self.voiceprint,
            "kept_by": ["the profile speaking", f"edge-agent profile keep {self.profile}"],
        }
