"""Every Redis key the service uses, in one place. A key built from an id or a name
checks its format first (`service.ids.check_id`): nothing from a request reaches Redis
unvalidated, and a malformed id is "not found"."""

from __future__ import annotations

from service.ids import check_id


class Keys:
    def __init__(self, prefix: str = "arena") -> None:
        self.p = prefix

    # datasets
    @property
    def datasets(self) -> str:
        return f"{self.p}:datasets"  # set of dataset names

    def dataset_versions(self, name: str) -> str:
        check_id("name", name)
        return f"{self.p}:dataset:{name}:versions"  # list of version ids, oldest first

    def dataset_version(self, name_and_version: str) -> str:
        name, _, version_id = name_and_version.rpartition(":")
        check_id("name", name), check_id("dataset version", version_id)
        return f"{self.p}:dsv:{name_and_version}"  # JSON DatasetVersion

    # jobs
    @property
    def jobs(self) -> str:
        return f"{self.p}:jobs"  # zset job id -> created ts

    def job(self, job_id: str) -> str:
        check_id("job", job_id)
        return f"{self.p}:job:{job_id}"  # JSON JobRecord

    def job_events(self, job_id: str) -> str:
        check_id("job", job_id)
        return f"{self.p}:job:{job_id}:events"  # stream of progress events

    def job_cancel(self, job_id: str) -> str:
        check_id("job", job_id)
        return f"{self.p}:job:{job_id}:cancel"

    @property
    def workers(self) -> str:
        return f"{self.p}:workers"  # hash worker id -> last heartbeat ts

    # models
    @property
    def bases(self) -> str:
        return f"{self.p}:bases"  # hash name -> JSON BaseModel

    @property
    def candidates(self) -> str:
        return f"{self.p}:candidates"  # hash name -> JSON Candidate

    @property
    def pending_unloads(self) -> str:
        return f"{self.p}:adapters:pending-unload"  # hash candidate name -> JSON PendingUnload

    def candidate_reservation(self, name: str) -> str:
        check_id("name", name)
        return f"{self.p}:candidate:{name}:reserved"  # run id holding the name

    # arena
    def battle(self, battle_id: str) -> str:
        check_id("battle", battle_id)
        return f"{self.p}:battle:{battle_id}"  # JSON battle, with a TTL

    def pending_battle(self, reviewer: str) -> str:
        return f"{self.p}:reviewer:{reviewer}:pending"  # the battle the arena page last showed them

    def battle_answer(self, battle_id: str, side: str) -> str:
        check_id("battle", battle_id)
        if side not in ("a", "b"):
            raise ValueError(f"side {side!r}: expected 'a' or 'b'")
        return f"{self.p}:battle:{battle_id}:answer:{side}"  # stream: the answer's text as it was written

    def battle_voted(self, battle_id: str) -> str:
        check_id("battle", battle_id)
        return f"{self.p}:battle:{battle_id}:voted"  # stream id of its vote

    @property
    def votes(self) -> str:
        return f"{self.p}:votes"  # stream: every vote, FastChat schema + board/reviewer

    @property
    def aggregates(self) -> str:
        # Root of the leaderboards' aggregates: `<this><gen>:...`, laid out in
        # service/store/aggregate_scripts.py (the Lua builds the names from this root).
        return f"{self.p}:agg:"

    @property
    def aggregates_current(self) -> str:
        return f"{self.p}:agg:current"  # the generation the votes are counted into

    @property
    def judge_calibration(self) -> str:
        return f"{self.p}:judge-calibration"  # JSON: the last per-judge calibration, its time and vote counts

    @property
    def judge_calibration_job(self) -> str:
        return f"{self.p}:judge-calibration:job"  # "<job id> <claimed at>": the last calibration job queued

    @property
    def aggregates_next(self) -> str:
        return f"{self.p}:agg:next"  # counter: the next rebuild's generation

    def legacy_board_counts(self, board: str) -> str:
        return f"{self.p}:counts:{board}"  # before the aggregates: pair counts only (deleted by a rebuild)

    def reviewer_rate(self, reviewer: str) -> str:
        return f"{self.p}:rate:{reviewer}"

    def address_rate(self, address: str) -> str:
        return f"{self.p}:rate-address:{address}"  # votes from one client address in the window

    def address_deals(self, address: str, minute: int) -> str:
        return f"{self.p}:deals-address:{address}:{minute}"  # battles dealt to one client address in a minute

    @property
    def reviewer_tokens(self) -> str:
        return f"{self.p}:reviewers:tokens"  # hash sha256(token) -> reviewer id

    @property
    def excluded_reviewers(self) -> str:
        return f"{self.p}:reviewers:excluded"

    @property
    def reviewer_secret(self) -> str:
        return f"{self.p}:reviewers:secret"  # HMAC key of anonymous reviewer cookies

    @property
    def active_models(self) -> str:
        return f"{self.p}:arena:active"

    @property
    def prompts(self) -> str:
        return f"{self.p}:arena:prompts"  # list of JSON prompts

    def generation_cache(self, key: str) -> str:
        return f"{self.p}:gen:{key}"

    # corrections (reviewers' improved answers to battles they voted on)
    @property
    def corrections(self) -> str:
        return f"{self.p}:corrections"  # zset correction id -> created ts

    def correction(self, correction_id: str) -> str:
        check_id("correction", correction_id)
        return f"{self.p}:correction:{correction_id}"  # JSON correction

    def pending_correction(self, battle_id: str, reviewer: str) -> str:
        check_id("battle", battle_id), check_id("name", reviewer)
        return f"{self.p}:battle:{battle_id}:correction:{reviewer}"  # id of the reviewer's pending correction

    # evals
    @property
    def evals(self) -> str:
        return f"{self.p}:evals"  # zset eval id -> created ts

    def eval(self, eval_id: str) -> str:
        check_id("eval", eval_id)
        return f"{self.p}:eval:{eval_id}"  # JSON EvalRecord

    def candidate_evals(self, name: str) -> str:
        check_id("name", name)
        return f"{self.p}:candidate:{name}:evals"  # zset eval id -> created ts

    def eval_cache(self, key: str) -> str:
        return f"{self.p}:evalcache:{key}"  # eval id holding a candidate's results for a task identity

    @property
    def queue_name(self) -> str:
        return f"{self.p}-jobs"
