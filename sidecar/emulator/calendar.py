"""Calendar v3 data per Google account: events, Meet conferences, sync tokens, page tokens.

Called under the state's lock. Every mutation goes through :meth:`CalendarStore._touch`, which
bumps the calendar's change sequence (the basis of sync tokens), ``updated`` and ``etag``, and
queues push notifications for the calendar's channels. Facts followed: reference notes §4-§6, §8.
"""

from __future__ import annotations

import base64
import copy
import json
import random
import re
import secrets
import string
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sidecar.clock import Clock
from sidecar.emulator import errors
from sidecar.emulator.config import EmulatorConfig
from sidecar.emulator.discovery import parse_rfc3339

if TYPE_CHECKING:
    from sidecar.emulator.push import PushHub

EVENT_ID_RE = re.compile(r"^[a-v0-9]{5,1024}$")
#: fields the client may not set; Google ignores them in request bodies
READ_ONLY = frozenset(
    {"kind", "etag", "htmlLink", "created", "updated", "creator", "organizer", "hangoutLink",
     "recurringEventId", "privateCopy", "locked"}
)
SERVER_KEPT = ("kind", "id", "htmlLink", "created", "creator", "organizer", "iCalUID", "eventType")
SYNC_FORBIDDEN = ("iCalUID", "orderBy", "privateExtendedProperty", "q", "sharedExtendedProperty",
                  "timeMin", "timeMax", "updatedMin")
CANCELLED_LIST_FIELDS = ("kind", "etag", "id", "status", "updated", "recurringEventId",
                         "originalStartTime")


def rfc3339(when: datetime) -> str:
    """Google's timestamp style: UTC with milliseconds, ``2026-11-28T09:00:00.000Z``."""
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


@dataclass
class Conference:
    request_id: str
    created: datetime
    outcome: str  # success | failure | pending (forever)
    resolved: bool = False


@dataclass
class StoredEvent:
    resource: dict[str, Any]
    change_seq: int
    order: int
    conference: Conference | None = None


@dataclass
class Calendar:
    owner: str
    id: str
    events: dict[str, StoredEvent] = field(default_factory=dict)
    seq: int = 0
    min_valid_seq: int = 0
    token_key: str = field(default_factory=lambda: secrets.token_hex(4))


@dataclass
class PageState:
    calendar: Calendar
    ids: list[str]
    sync_seq: int
    fingerprint: str
    cancelled_minimal: bool


class CalendarStore:
    def __init__(self, config: EmulatorConfig, clock: Clock, push: PushHub) -> None:
        self.config = config
        self.clock = clock
        self.push = push
        self.rng = random.Random(config.seed + 1)
        self.calendars: dict[tuple[str, str], Calendar] = {}
        self.pages: dict[str, PageState] = {}
        self.conference_mode = "success"
        self.conference_mode_count: int | None = None
        self._order = 0
        self._etag = 0

    # --- calendars ----------------------------------------------------------------------------

    def ensure_account(self, email: str) -> Calendar:
        key = (email, email)
        if key not in self.calendars:
            self.calendars[key] = Calendar(owner=email, id=email)
        return self.calendars[key]

    def add_calendar(self, email: str, calendar_id: str) -> None:
        self.ensure_account(email)
        self.calendars.setdefault((email, calendar_id), Calendar(owner=email, id=calendar_id))

    def remove_calendar(self, email: str, calendar_id: str) -> None:
        cal = self.calendar(email, calendar_id)
        del self.calendars[(email, cal.id)]
        self.push.notify(email, cal.id, "not_exists")

    def calendar(self, email: str, calendar_id: str) -> Calendar:
        """The account's calendar; ``primary`` and the account e-mail name the primary one."""
        self.ensure_account(email)
        cid = email if calendar_id in ("primary", email) or calendar_id.lower() == email \
            else calendar_id
        cal = self.calendars.get((email, cid))
        if cal is None:
            raise errors.not_found()
        return cal

    def metadata(self, email: str, calendar_id: str) -> dict[str, Any]:
        """``calendars.get``: the calendar resource. The primary calendar's id is the account
        e-mail (Google answers ``primary`` with the real id, which is how an app learns the
        address with a calendar scope alone); ``dataOwner`` is set for secondary calendars."""
        cal = self.calendar(email, calendar_id)
        out: dict[str, Any] = {
            "kind": "calendar#calendar",
            "etag": f'"{cal.token_key}"',  # metadata never changes here
            "id": cal.id,
            "summary": cal.id,
            "timeZone": "UTC",
            "conferenceProperties": {"allowedConferenceSolutionTypes": ["hangoutsMeet"]},
        }
        if cal.id != cal.owner:
            out["dataOwner"] = cal.owner
        return out

    def _event(self, cal: Calendar, event_id: str) -> StoredEvent:
        stored = cal.events.get(event_id)
        if stored is None:
            raise errors.not_found()
        return stored

    def peek(self, email: str, calendar_id: str, event_id: str) -> dict[str, Any] | None:
        try:
            return copy.deepcopy(self._event(self.calendar(email, calendar_id),
                                             event_id).resource)
        except errors.ApiError:
            return None

    # --- bookkeeping ----------------------------------------------------------------------------

    def _touch(self, cal: Calendar, stored: StoredEvent) -> None:
        now = self.clock.now()
        cal.seq += 1
        self._etag += 1
        stored.change_seq = cal.seq
        stored.resource["updated"] = rfc3339(now)
        stored.resource["etag"] = f'"{int(now.timestamp() * 1000)}{self._etag:06d}"'
        self.push.notify(cal.owner, cal.id, "exists")

    # --- validation ---------------------------------------------------------------------------

    @staticmethod
    def _when(edt: Any, label: str) -> tuple[str, datetime]:
        if not isinstance(edt, dict):
            raise errors.invalid(f"Invalid {label} time.")
        has_date, has_dt = "date" in edt, "dateTime" in edt
        if has_date == has_dt:
            raise errors.invalid(f"Invalid {label} time.")
        tz_name = edt.get("timeZone")
        tz = None
        if tz_name is not None:
            try:
                tz = ZoneInfo(tz_name)
            except (ZoneInfoNotFoundError, ValueError) as err:
                raise errors.invalid(f"Invalid time zone definition for {label} time.") from err
        if has_date:
            return "date", datetime.combine(date.fromisoformat(edt["date"]), datetime.min.time(),
                                            tzinfo=tz or UTC)
        raw = edt["dateTime"]
        if re.search(r"(Z|[+-]\d{2}:\d{2})$", raw):
            return "dateTime", parse_rfc3339(raw, f"{label}.dateTime")
        if tz is None:
            raise errors.invalid(f"Missing time zone definition for {label} time.")
        try:
            naive = datetime.fromisoformat(raw)
        except ValueError as err:
            raise errors.invalid(f"Invalid {label} time.") from err
        return "dateTime", naive.replace(tzinfo=tz)

    def _check_times(self, resource: dict[str, Any]) -> None:
        if "start" not in resource:
            raise errors.required("Missing start time.")
        if "end" not in resource:
            raise errors.required("Missing end time.")
        kind_s, start = self._when(resource["start"], "start")
        kind_e, end = self._when(resource["end"], "end")
        if kind_s != kind_e:
            raise errors.invalid("Start and end times must either both be date or both be "
                                 "dateTime.")
        if end < start:
            raise errors.ApiError(400, "timeRangeEmpty", "The specified time range is empty.",
                                  location="end.dateTime", location_type="parameter")

    @staticmethod
    def bounds(resource: dict[str, Any]) -> tuple[datetime, datetime]:
        return (CalendarStore._when(resource["start"], "start")[1],
                CalendarStore._when(resource["end"], "end")[1])

    @staticmethod
    def _check_status(resource: dict[str, Any], allow_cancelled: bool) -> None:
        allowed = {"confirmed", "tentative"} | ({"cancelled"} if allow_cancelled else set())
        if "status" in resource and resource["status"] not in allowed:
            raise errors.invalid("Invalid value for: status", "status")

    # --- conferences --------------------------------------------------------------------------

    def set_conference_mode(self, mode: str, count: int | None = None) -> None:
        if mode not in ("success", "failure", "pending"):
            raise ValueError("mode must be success, failure or pending")
        self.conference_mode, self.conference_mode_count = mode, count

    def _next_outcome(self) -> str:
        mode = self.conference_mode
        if self.conference_mode_count is not None:
            self.conference_mode_count -= 1
            if self.conference_mode_count <= 0:
                self.conference_mode, self.conference_mode_count = "success", None
        return mode

    def _apply_conference(self, stored: StoredEvent | None, resource: dict[str, Any],
                          body: dict[str, Any], version: int, *, replace: bool) -> None:
        """conferenceData rules; ``resource`` is the event being built (old data already in it
        for patch/keep, absent for update)."""
        old_cd = stored.resource.get("conferenceData") if stored else None
        old_conf = stored.conference if stored else None
        if version != 1:
            # version 0 ignores conference data in the body (discovery doc)
            if old_cd is not None:
                resource["conferenceData"] = old_cd
                if "hangoutLink" in stored.resource:  # type: ignore[union-attr]
                    resource["hangoutLink"] = stored.resource["hangoutLink"]  # type: ignore[union-attr]
            else:
                resource.pop("conferenceData", None)
            if stored is not None:
                stored.conference = old_conf
            return
        if "conferenceData" not in body:
            if replace:  # update replaces the resource: omitted conference data is removed
                resource.pop("conferenceData", None)
                resource.pop("hangoutLink", None)
                if stored is not None:
                    stored.conference = None
            return
        new_cd = body["conferenceData"]
        if not new_cd:
            resource.pop("conferenceData", None)
            resource.pop("hangoutLink", None)
            if stored is not None:
                stored.conference = None
            return
        create = new_cd.get("createRequest")
        if create is not None:
            request_id = create.get("requestId")
            if not request_id:
                raise errors.required("Missing conference request id.",
                                      "conferenceData.createRequest.requestId")
            ctype = create.get("conferenceSolutionKey", {}).get("type")
            if ctype != "hangoutsMeet":
                raise errors.invalid("Invalid conference type value.",
                                     "conferenceData.createRequest.conferenceSolutionKey.type")
            if old_conf is not None and old_conf.request_id == request_id:
                # "If an ID provided is the same as for the previous request, the request is
                # ignored."
                resource["conferenceData"] = old_cd
                if stored is not None and "hangoutLink" in stored.resource:
                    resource["hangoutLink"] = stored.resource["hangoutLink"]
                return
            conf = Conference(request_id, self.clock.now(), self._next_outcome())
            resource.pop("hangoutLink", None)
            resource["conferenceData"] = {
                "createRequest": {
                    "requestId": request_id,
                    "conferenceSolutionKey": {"type": "hangoutsMeet"},
                    "status": {"statusCode": "pending"},
                }
            }
            if stored is not None:
                stored.conference = conf
            resource["_new_conference"] = conf
            if self.config.conference_delay_seconds <= 0 and conf.outcome != "pending":
                self._resolve(resource, conf)
            return
        # conference data without a create request: only the event's own conference may be
        # echoed back (stricter than Google: no reuse of another event's conference)
        if old_cd is not None and new_cd.get("conferenceId") == old_cd.get("conferenceId"):
            resource["conferenceData"] = old_cd
            if stored is not None and "hangoutLink" in stored.resource:
                resource["hangoutLink"] = stored.resource["hangoutLink"]
            return
        raise errors.invalid("Invalid conference data: use conferenceData.createRequest to "
                             "create a conference.", "conferenceData")

    def _meet_code(self) -> str:
        letters = string.ascii_lowercase
        return "-".join("".join(self.rng.choice(letters) for _ in range(n)) for n in (3, 4, 3))

    def _resolve(self, resource: dict[str, Any], conf: Conference, force: str | None = None
                 ) -> None:
        outcome = force or conf.outcome
        create = resource["conferenceData"]["createRequest"]
        conf.resolved = True
        if outcome == "failure":
            create["status"] = {"statusCode": "failure"}
            resource["conferenceData"] = {"createRequest": create}
            resource.pop("hangoutLink", None)
            return
        code = self._meet_code()
        link = f"https://meet.google.com/{code}"
        create["status"] = {"statusCode": "success"}
        resource["conferenceData"] = {
            "createRequest": create,
            "entryPoints": [
                {"entryPointType": "video", "uri": link, "label": f"meet.google.com/{code}"}
            ],
            "conferenceSolution": {
                "key": {"type": "hangoutsMeet"},
                "name": "Google Meet",
                "iconUri": "https://fonts.gstatic.com/s/i/productlogos/meet_2020q4/v6/web-512dp/"
                "logo_meet_2020q4_color_2x_web_512dp.png",
            },
            "conferenceId": code,
        }
        resource["hangoutLink"] = link

    def resolve_due_conferences(self) -> None:
        now = self.clock.now()
        delay = timedelta(seconds=self.config.conference_delay_seconds)
        for cal in list(self.calendars.values()):
            for stored in cal.events.values():
                conf = stored.conference
                if (conf is not None and not conf.resolved and conf.outcome != "pending"
                        and now >= conf.created + delay):
                    self._resolve(stored.resource, conf)
                    self._touch(cal, stored)

    def resolve_all_pending(self) -> int:
        count = 0
        for cal in list(self.calendars.values()):
            for stored in cal.events.values():
                conf = stored.conference
                if conf is not None and not conf.resolved:
                    self._resolve(stored.resource, conf,
                                  force="failure" if conf.outcome == "failure" else "success")
                    self._touch(cal, stored)
                    count += 1
        return count

    # --- events: API ----------------------------------------------------------------------------

    def _writable(self, body: dict[str, Any]) -> dict[str, Any]:
        return {k: copy.deepcopy(v) for k, v in body.items()
                if k not in READ_ONLY and k != "conferenceData"}

    def insert(self, email: str, calendar_id: str, body: dict[str, Any],
               params: dict[str, Any]) -> dict[str, Any]:
        cal = self.calendar(email, calendar_id)
        event_id = body.get("id")
        if event_id is not None:
            if not EVENT_ID_RE.match(event_id):
                raise errors.invalid("Invalid resource id value.", "id")
            if "iCalUID" in body:
                raise errors.invalid("Only one of id and iCalUID may be supplied at creation "
                                     "(stricter than Google).", "iCalUID")
            if event_id in cal.events:  # also when that event was deleted (cancelled)
                raise errors.duplicate()
        else:
            event_id = "".join(self.rng.choice("abcdefghijklmnopqrstuv0123456789")
                               for _ in range(26))
        self._check_status(body, allow_cancelled=False)
        resource = self._writable(body)
        self._check_times(resource)
        now = self.clock.now()
        eid = base64.urlsafe_b64encode(f"{event_id} {cal.id}".encode()).decode().rstrip("=")
        resource.update(
            {
                "kind": "calendar#event",
                "id": event_id,
                "status": body.get("status", "confirmed"),
                "htmlLink": f"https://www.google.com/calendar/event?eid={eid}",
                "created": rfc3339(now),
                "creator": {"email": email, "self": True},
                "organizer": {"email": cal.id, "self": True},
                "iCalUID": body.get("iCalUID", f"{event_id}@google.com"),
                "sequence": 0,
                "eventType": body.get("eventType", "default"),
            }
        )
        resource.setdefault("reminders", {"useDefault": True})
        self._apply_conference(None, resource, body, params.get("conferenceDataVersion", 0),
                               replace=True)
        conf = resource.pop("_new_conference", None)
        self._order += 1
        stored = StoredEvent(resource=resource, change_seq=0, order=self._order,
                             conference=conf)
        cal.events[event_id] = stored
        self._touch(cal, stored)
        return copy.deepcopy(resource)

    def get(self, email: str, calendar_id: str, event_id: str) -> dict[str, Any]:
        return copy.deepcopy(self._event(self.calendar(email, calendar_id), event_id).resource)

    def _write(self, cal: Calendar, stored: StoredEvent, new: dict[str, Any],
               body: dict[str, Any], version: int, replace: bool) -> dict[str, Any]:
        self._check_status(new, allow_cancelled=True)
        self._check_times(new)
        old = stored.resource
        self._apply_conference(stored, new, body, version, replace=replace)
        conf = new.pop("_new_conference", None)
        if conf is not None:
            stored.conference = conf
        if (self.bounds(old) != self.bounds(new) or old.get("recurrence") != new.get("recurrence")
                or old.get("start") != new.get("start") or old.get("end") != new.get("end")):
            new["sequence"] = old.get("sequence", 0) + 1
        else:
            new["sequence"] = old.get("sequence", 0)
        stored.resource = new
        self._touch(cal, stored)
        return copy.deepcopy(new)

    def _check_body_id(self, body: dict[str, Any], event_id: str) -> None:
        if "id" in body and body["id"] != event_id:
            raise errors.invalid("The event id in the body does not match the URL.", "id")

    def patch(self, email: str, calendar_id: str, event_id: str, body: dict[str, Any],
              params: dict[str, Any]) -> dict[str, Any]:
        cal = self.calendar(email, calendar_id)
        stored = self._event(cal, event_id)
        self._check_body_id(body, event_id)
        new = copy.deepcopy(stored.resource)
        for key, value in self._writable(body).items():
            if key in ("id", "iCalUID", "eventType"):
                if value != new.get(key):
                    raise errors.invalid(f"The field {key} cannot be changed.", key)
                continue
            if value is None:
                if key in ("start", "end"):
                    raise errors.required(f"Missing {key} time.")
                new.pop(key, None)
            elif key in ("start", "end") or not isinstance(value, dict):
                new[key] = value  # start/end and arrays replace as a whole
            else:
                new[key] = _merge(new.get(key), value)
        return self._write(cal, stored, new, body, params.get("conferenceDataVersion", 0),
                           replace=False)

    def update(self, email: str, calendar_id: str, event_id: str, body: dict[str, Any],
               params: dict[str, Any]) -> dict[str, Any]:
        cal = self.calendar(email, calendar_id)
        stored = self._event(cal, event_id)
        self._check_body_id(body, event_id)
        old = stored.resource
        for key in ("iCalUID", "eventType"):
            if key in body and body[key] != old.get(key):
                raise errors.invalid(f"The field {key} cannot be changed.", key)
        new = self._writable(body)
        for key in SERVER_KEPT:
            if key in old:
                new[key] = old[key]
        new.setdefault("status", "confirmed")
        new.setdefault("reminders", {"useDefault": True})
        if old.get("conferenceData") is not None:
            new["conferenceData"] = old["conferenceData"]
            if "hangoutLink" in old:
                new["hangoutLink"] = old["hangoutLink"]
        return self._write(cal, stored, new, body, params.get("conferenceDataVersion", 0),
                           replace=True)

    def delete(self, email: str, calendar_id: str, event_id: str) -> None:
        cal = self.calendar(email, calendar_id)
        stored = self._event(cal, event_id)
        if stored.resource.get("status") == "cancelled":
            raise errors.deleted()
        stored.resource["status"] = "cancelled"
        self._touch(cal, stored)

    # --- events.list ----------------------------------------------------------------------------

    def _sync_token(self, cal: Calendar, seq: int) -> str:
        raw = json.dumps([cal.token_key, seq]).encode()
        return "CPDAlv" + base64.urlsafe_b64encode(raw).decode().rstrip("=")

    def _parse_sync_token(self, cal: Calendar, token: str) -> int:
        try:
            if not token.startswith("CPDAlv"):
                raise ValueError
            raw = token[6:]
            key, seq = json.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
            if key != cal.token_key or not isinstance(seq, int):
                raise ValueError
        except (ValueError, TypeError) as err:
            raise errors.invalid("Invalid sync token value.", "syncToken") from err
        if seq < cal.min_valid_seq:
            raise errors.full_sync_required()
        return seq

    def invalidate_sync_tokens(self, email: str | None, calendar_id: str | None) -> None:
        for cal in self.calendars.values():
            if email is not None and cal.owner != email:
                continue
            if calendar_id not in (None, "primary", cal.id) or (
                calendar_id == "primary" and cal.id != cal.owner
            ):
                continue
            cal.seq += 1  # tokens issued from now on carry a newer sequence
            cal.min_valid_seq = cal.seq

    def list(self, email: str, calendar_id: str, params: dict[str, Any]) -> dict[str, Any]:
        cal = self.calendar(email, calendar_id)
        size = min(params.get("maxResults", 250), 2500)
        fingerprint = json.dumps({k: v for k, v in sorted(params.items())
                                  if k not in ("pageToken", "maxResults", "alt", "prettyPrint",
                                               "fields", "quotaUser")}, default=str)
        if "pageToken" in params:
            page = self.pages.get(params["pageToken"])
            if page is None or page.calendar is not cal or page.fingerprint != fingerprint:
                raise errors.invalid("Invalid page token value.", "pageToken")
            del self.pages[params["pageToken"]]
        else:
            page = self._first_page(cal, params, fingerprint)
        chunk, rest = page.ids[:size], page.ids[size:]
        items = []
        for event_id in chunk:
            res = cal.events[event_id].resource
            if res.get("status") == "cancelled" and page.cancelled_minimal:
                res = {k: res[k] for k in CANCELLED_LIST_FIELDS if k in res}
            items.append(copy.deepcopy(res))
        out: dict[str, Any] = {
            "kind": "calendar#events",
            "etag": f'"{cal.seq}"',
            "summary": cal.id,
            "description": "",
            "updated": rfc3339(self.clock.now()),
            "timeZone": "UTC",
            "accessRole": "owner",
            "defaultReminders": [],
            "items": items,
        }
        if rest:
            token = secrets.token_urlsafe(18)
            self.pages[token] = PageState(cal, rest, page.sync_seq, fingerprint,
                                          page.cancelled_minimal)
            out["nextPageToken"] = token
        else:
            out["nextSyncToken"] = self._sync_token(cal, page.sync_seq)
        return out

    def _first_page(self, cal: Calendar, params: dict[str, Any], fingerprint: str) -> PageState:
        events = sorted(cal.events.values(), key=lambda s: s.order)
        if "syncToken" in params:
            bad = [p for p in SYNC_FORBIDDEN if p in params]
            if bad:
                raise errors.invalid(f"The parameter {bad[0]} cannot be combined with syncToken.",
                                     bad[0])
            if params.get("showDeleted") is False:
                raise errors.invalid("showDeleted cannot be false with syncToken.",
                                     "showDeleted")
            since = self._parse_sync_token(cal, params["syncToken"])
            changed = sorted((s for s in events if s.change_seq > since),
                             key=lambda s: s.change_seq)
            return PageState(cal, [s.resource["id"] for s in changed], cal.seq, fingerprint, True)
        if params.get("orderBy") == "startTime" and not params.get("singleEvents"):
            raise errors.invalid("The requested ordering is not available for the particular "
                                 "query.", "orderBy")
        tmin = parse_rfc3339(params["timeMin"], "timeMin") if "timeMin" in params else None
        tmax = parse_rfc3339(params["timeMax"], "timeMax") if "timeMax" in params else None
        if tmin is not None and tmax is not None and tmin >= tmax:
            raise errors.ApiError(400, "timeRangeEmpty", "The specified time range is empty.",
                                  location="timeMax", location_type="parameter")
        umin = parse_rfc3339(params["updatedMin"], "updatedMin") if "updatedMin" in params \
            else None
        show_deleted = bool(params.get("showDeleted")) or umin is not None
        private = _props(params.get("privateExtendedProperty", []), "privateExtendedProperty")
        shared = _props(params.get("sharedExtendedProperty", []), "sharedExtendedProperty")
        selected = []
        for stored in events:
            res = stored.resource
            if res.get("status") == "cancelled" and not show_deleted:
                continue
            start, end = self.bounds(res)
            if tmin is not None and not end > tmin:
                continue
            if tmax is not None and not start < tmax:
                continue
            if umin is not None and parse_rfc3339(res["updated"], "updated") < umin:
                continue
            if "iCalUID" in params and res.get("iCalUID") != params["iCalUID"]:
                continue
            if "eventTypes" in params and res.get("eventType", "default") not in \
                    params["eventTypes"]:
                continue
            ext = res.get("extendedProperties", {})
            if any(ext.get("private", {}).get(k) != v for k, v in private):
                continue
            if any(ext.get("shared", {}).get(k) != v for k, v in shared):
                continue
            if "q" in params and not _matches(res, params["q"]):
                continue
            selected.append(stored)
        if params.get("orderBy") == "startTime":
            selected.sort(key=lambda s: self.bounds(s.resource)[0])
        elif params.get("orderBy") == "updated":
            selected.sort(key=lambda s: s.change_seq)
        return PageState(cal, [s.resource["id"] for s in selected], cal.seq, fingerprint,
                         umin is not None)

    # --- acting as the Google user ----------------------------------------------------------

    def user_create(self, email: str, calendar_id: str, body: dict[str, Any]) -> dict[str, Any]:
        return self.insert(email, calendar_id, body, {"conferenceDataVersion": 1})

    def user_edit(self, email: str, calendar_id: str, event_id: str, changes: dict[str, Any]
                  ) -> dict[str, Any]:
        return self.patch(email, calendar_id, event_id, changes, {})

    def user_delete(self, email: str, calendar_id: str, event_id: str) -> dict[str, Any]:
        self.delete(email, calendar_id, event_id)
        return self.get(email, calendar_id, event_id)

    def user_regenerate_meet(self, email: str, calendar_id: str, event_id: str
                             ) -> dict[str, Any]:
        """The user replaces the event's Meet with a new one: new code and link at once."""
        cal = self.calendar(email, calendar_id)
        stored = self._event(cal, event_id)
        conf = Conference("user-" + secrets.token_hex(8), self.clock.now(), "success")
        stored.resource["conferenceData"] = {
            "createRequest": {"requestId": conf.request_id,
                              "conferenceSolutionKey": {"type": "hangoutsMeet"},
                              "status": {"statusCode": "pending"}}
        }
        self._resolve(stored.resource, conf)
        stored.conference = conf
        self._touch(cal, stored)
        return copy.deepcopy(stored.resource)

    def dump(self) -> list[dict[str, Any]]:
        return [
            {"owner": cal.owner, "id": cal.id, "events": [copy.deepcopy(s.resource)
                                                         for s in cal.events.values()]}
            for cal in self.calendars.values()
        ]


def _merge(old: Any, new: dict[str, Any]) -> dict[str, Any]:
    """Patch semantics for objects: nested merge, null removes a key, arrays replace."""
    out = dict(old) if isinstance(old, dict) else {}
    for key, value in new.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict):
            out[key] = _merge(out.get(key), value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _props(raw: list[str], name: str) -> list[tuple[str, str]]:
    out = []
    for item in raw:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise errors.invalid(f"Invalid value for: {name}", name)
        out.append((key, value))
    return out


def _matches(resource: dict[str, Any], query: str) -> bool:
    hay = " ".join(str(resource.get(k, "")) for k in ("summary", "description", "location"))
    hay = hay.lower()
    return all(term in hay for term in query.lower().split())
