"""Database models of the scheduler: every table lives here.

Schema changes are Alembic migrations under ``alembic/versions``; ``db.py`` upgrades
a database to the head revision at start.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    JSON, BigInteger, Boolean, DateTime, Enum, Float, ForeignKey, Index, Integer, String, Text, UniqueConstraint, false,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from .states import RunState, StopCause


# Longest Idempotency-Key a client may send (printable ASCII).
CLIENT_KEY_MAX = 200


class Base(DeclarativeBase):
    pass


def _enum(cls, name):
    return Enum(cls, name=name, native_enum=False, values_callable=lambda e: [m.value for m in e], length=32)


class Run(Base):
    """One training run: what was asked for, where it ran and how it ended."""

    __tablename__ = "runs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    owner: Mapped[str] = mapped_column(String(255), index=True)
    name: Mapped[str] = mapped_column(String(255), default="")
    experiment: Mapped[str] = mapped_column(String(255), default="default", index=True)
    group: Mapped[str] = mapped_column(String(255), default="", server_default="", index=True)
    preemptible: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())

    entry_point: Mapped[str] = mapped_column(String(1024))
    args: Mapped[list] = mapped_column(JSON, default=list)
    hyperparameters: Mapped[dict] = mapped_column(JSON, default=dict)
    snapshot_bytes: Mapped[int] = mapped_column(BigInteger, default=0)

    gpus: Mapped[int] = mapped_column(Integer, default=0)
    cpus: Mapped[int] = mapped_column(Integer, default=1)
    memory_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    priority: Mapped[int] = mapped_column(Integer, default=0)
    max_seconds: Mapped[int | None] = mapped_column(Integer, nullable=True)

    state: Mapped[RunState] = mapped_column(_enum(RunState, "run_state"), index=True)
    reason: Mapped[str] = mapped_column(Text, default="")
    stop_cause: Mapped[StopCause | None] = mapped_column(_enum(StopCause, "stop_cause"), nullable=True)

    submitted_at: Mapped[datetime] = mapped_column(DateTime)
    started_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    ended_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)

    node: Mapped[str | None] = mapped_column(String(255), nullable=True)
    assigned_gpus: Mapped[list] = mapped_column(JSON, default=list)
    exit_code: Mapped[int | None] = mapped_column(Integer, nullable=True)

    run_dir: Mapped[str] = mapped_column(String(4096))
    log_path: Mapped[str] = mapped_column(String(4096))
    # Executor bookkeeping to re-attach after a restart: the executor's own reference to the job
    # ("PID START" of a local run's process, a Slurm job id); pid/process_start are the local
    # executor's before revision 0005, still written for people reading the table.
    pid: Mapped[int | None] = mapped_column(Integer, nullable=True)
    process_start: Mapped[str | None] = mapped_column(String(64), nullable=True)
    job_ref: Mapped[str | None] = mapped_column(String(200), nullable=True)
    # The client's Idempotency-Key: a retried submission with the same key (per owner) is the same run.
    client_key: Mapped[str | None] = mapped_column(String(CLIENT_KEY_MAX), nullable=True)

    # Metrics (revision 0006): the rules that read them from the log ([{"name", "regex"}], None: the
    # default name=value reader), the latest and best value of each, how many points are stored, and
    # how far the log and the report file were read (moved in the transaction that stores the points).
    metric_rules: Mapped[list | None] = mapped_column(JSON, nullable=True)
    metric_summary: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    metric_points: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    log_read_offset: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    report_read_offset: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    # Checkpoints registered with ``nothing.save(name, step)``: {name: step}.
    checkpoint_steps: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    # Bytes the run's folder takes on disk, measured (storage quotas count them).
    disk_bytes: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    # --checkpoint RUN[:CHECKPOINT]
    checkpoint_run: Mapped[int | None] = mapped_column(Integer, nullable=True)
    checkpoint_name: Mapped[str | None] = mapped_column(String(1024), nullable=True)
    # Multi-node runs: ``nodes`` x ``gpus_per_node`` (0: not shaped), processes per node, torchrun,
    # and where each part runs ([[node, [gpu, ...]], ...]) once placed.
    nodes: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    gpus_per_node: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    procs_per_node: Mapped[int | None] = mapped_column(Integer, nullable=True)
    torchrun: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    placement: Mapped[list | None] = mapped_column(JSON, nullable=True)
    # --dataset NAME=REF: [{"name", "dataset_id", "dataset", "version"}], the exact versions it reads.
    datasets: Mapped[list | None] = mapped_column(JSON, nullable=True)
    # What the run is (revision 0009): "train" (a user's run), "serving" (a replica of a stage resource)
    # or "batch" (a batch inference's job); ``parent_id`` is that stage resource's or batch inference's id.
    kind: Mapped[str] = mapped_column(String(16), default="train", server_default="train", index=True)
    parent_id: Mapped[int | None] = mapped_column(Integer, nullable=True)

    events: Mapped[list[RunEvent]] = relationship(
        back_populates="run", cascade="all, delete-orphan", order_by="RunEvent.id"
    )

    __table_args__ = (
        Index("ix_runs_owner_state", "owner", "state"),
        Index("uq_runs_owner_client_key", "owner", "client_key", unique=True),
    )


class RunEvent(Base):
    """One transition of a run: the story a user reads to learn why it waited or ended."""

    __tablename__ = "run_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), index=True)
    at: Mapped[datetime] = mapped_column(DateTime)
    from_state: Mapped[RunState | None] = mapped_column(_enum(RunState, "run_state"), nullable=True)
    to_state: Mapped[RunState] = mapped_column(_enum(RunState, "run_state"))
    reason: Mapped[str] = mapped_column(Text, default="")

    run: Mapped[Run] = relationship(back_populates="events")


class Experiment(Base):
    """A named set of runs of one owner (EasyMaker's experiment); deleted only once it has no runs."""

    __tablename__ = "experiments"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    owner: Mapped[str] = mapped_column(String(255), index=True)
    name: Mapped[str] = mapped_column(String(255))
    description: Mapped[str] = mapped_column(Text, default="", server_default="")
    group: Mapped[str] = mapped_column(String(255), default="", server_default="")
    # The metric rules of its runs that name none; None: the default name=value reader.
    metric_rules: Mapped[list | None] = mapped_column(JSON, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime)
    updated_at: Mapped[datetime] = mapped_column(DateTime)

    __table_args__ = (UniqueConstraint("owner", "name", name="uq_experiments_owner_name"),
                      {"sqlite_autoincrement": True})  # revision 0012: ids never reused


class Dataset(Base):
    """Files a user or a group pushes once and every run reads, read-only; immutable versions.

    ``namespace`` is the owner's user name, or ``group:<name>`` for a group's dataset;
    names are unique within a namespace.
    """

    __tablename__ = "datasets"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    owner: Mapped[str] = mapped_column(String(255), index=True)
    group: Mapped[str] = mapped_column(String(255), default="", server_default="")
    namespace: Mapped[str] = mapped_column(String(300))
    name: Mapped[str] = mapped_column(String(255))
    description: Mapped[str] = mapped_column(Text, default="", server_default="")
    created_at: Mapped[datetime] = mapped_column(DateTime)

    versions: Mapped[list[DatasetVersion]] = relationship(
        back_populates="dataset", cascade="all, delete-orphan", order_by="DatasetVersion.version")

    __table_args__ = (UniqueConstraint("namespace", "name", name="uq_datasets_namespace_name"),
                      {"sqlite_autoincrement": True})


class DatasetVersion(Base):
    """One immutable version: its files (stored once across versions) or a registered server folder."""

    __tablename__ = "dataset_versions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id", ondelete="CASCADE"))
    version: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(DateTime)
    created_by: Mapped[str] = mapped_column(String(255))
    files: Mapped[int] = mapped_column(BigInteger)
    bytes: Mapped[int] = mapped_column(BigInteger)
    source_path: Mapped[str | None] = mapped_column(String(4096), nullable=True)

    dataset: Mapped[Dataset] = relationship(back_populates="versions")

    __table_args__ = (UniqueConstraint("dataset_id", "version", name="uq_dataset_versions_dataset_version"),
                      {"sqlite_autoincrement": True})


class MetricPoint(Base):
    """One value of one metric of a run, at a step and a wall time (seconds since the epoch)."""

    __tablename__ = "metric_points"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(100))
    step: Mapped[int] = mapped_column(BigInteger)
    at: Mapped[float] = mapped_column(Float)
    value: Mapped[float | None] = mapped_column(Float, nullable=True)

    __table_args__ = (Index("ix_metric_points_run_name_step", "run_id", "name", "step"),)


class NotebookGpus(Base):
    """GPUs a notebook server holds for as long as it runs; never preempted."""

    __tablename__ = "notebook_gpus"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    owner: Mapped[str] = mapped_column(String(255))
    server: Mapped[str] = mapped_column(String(255))
    group: Mapped[str] = mapped_column(String(255))
    node: Mapped[str] = mapped_column(String(255))
    gpus: Mapped[list] = mapped_column(JSON)
    allocated_at: Mapped[datetime] = mapped_column(DateTime)
    # Lets the spawner give the GPUs back after the hub has revoked the server's token.
    release_token: Mapped[str] = mapped_column(String(64))

    __table_args__ = (UniqueConstraint("owner", "server", name="uq_notebook_gpus_owner_server"),)


class Tuning(Base):
    """A hyperparameter tuning (EasyMaker's 하이퍼파라미터 튜닝): its settings, state and where its code is.

    The search itself is an Optuna study (``study_name``) in its own SQLite file; see docs/tuning.md.
    """

    __tablename__ = "tunings"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    owner: Mapped[str] = mapped_column(String(255), index=True)
    group: Mapped[str] = mapped_column(String(255), default="", server_default="")
    name: Mapped[str] = mapped_column(String(255), default="")
    experiment: Mapped[str] = mapped_column(String(255), default="default")
    state: Mapped[str] = mapped_column(String(64), index=True)
    state_detail: Mapped[str] = mapped_column(String(64), default="", server_default="")
    reason: Mapped[str] = mapped_column(Text, default="", server_default="")
    # TuningSpec.to_json(), and the run fields every trial gets (entry point, args, CPUs ...).
    spec: Mapped[dict] = mapped_column(JSON)
    trial_fields: Mapped[dict] = mapped_column(JSON)
    # Whose groups the owner had at creation (trials are submitted with them, after restarts too).
    owner_groups: Mapped[list] = mapped_column(JSON, default=list)
    archive_path: Mapped[str] = mapped_column(String(4096))
    study_name: Mapped[str] = mapped_column(String(255), default="")
    created_at: Mapped[datetime] = mapped_column(DateTime)
    started_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    ended_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)

    trials: Mapped[list[TuningTrial]] = relationship(
        back_populates="tuning", cascade="all, delete-orphan", order_by="TuningTrial.number")

    __table_args__ = ({"sqlite_autoincrement": True},)  # revision 0011: ids never reused (trials' keys name them)


class TrainingTemplate(Base):
    """A training template (EasyMaker's 학습 템플릿): a run's or a tuning's settings and, optionally, its code.

    ``settings`` holds submission fields (entry point, hyperparameters, resources, metrics,
    datasets, tuning fields); a run or a tuning made from it overrides any of them. See docs/templates.md.
    """

    __tablename__ = "training_templates"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    owner: Mapped[str] = mapped_column(String(255), index=True)
    group: Mapped[str] = mapped_column(String(255), default="", server_default="", index=True)
    name: Mapped[str] = mapped_column(String(255))
    description: Mapped[str] = mapped_column(Text, default="", server_default="")
    settings: Mapped[dict] = mapped_column(JSON)
    archive_path: Mapped[str | None] = mapped_column(String(4096), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime)

    __table_args__ = (UniqueConstraint("owner", "name", name="uq_training_templates_owner_name"),
                      {"sqlite_autoincrement": True})


class TuningTrial(Base):
    """One trial of a tuning: the Optuna trial number, its suggestion and the run that tries it."""

    __tablename__ = "tuning_trials"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    tuning_id: Mapped[int] = mapped_column(ForeignKey("tunings.id", ondelete="CASCADE"))
    number: Mapped[int] = mapped_column(Integer)
    run_id: Mapped[int | None] = mapped_column(Integer, nullable=True, index=True)
    params: Mapped[dict] = mapped_column(JSON)
    state: Mapped[str] = mapped_column(String(32))
    value: Mapped[float | None] = mapped_column(Float, nullable=True)
    # Set before the run is stopped by median stopping, so its end reads EARLY_STOPPED after a restart too.
    early_stop: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    created_at: Mapped[datetime] = mapped_column(DateTime)
    ended_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)

    tuning: Mapped[Tuning] = relationship(back_populates="trials")

    __table_args__ = (UniqueConstraint("tuning_id", "number", name="uq_tuning_trials_tuning_number"),)


class Model(Base):
    """A model (EasyMaker's 모델): an artifact a run, a tuning's best trial or an upload left, ready to serve.

    The artifact is copied into the platform's model store (``artifact_path``, root's) when the model
    is made, so what an endpoint serves cannot change under it.  See docs/serving.md.
    """

    __tablename__ = "models"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    owner: Mapped[str] = mapped_column(String(255), index=True)
    group: Mapped[str] = mapped_column(String(255), default="", server_default="", index=True)
    name: Mapped[str] = mapped_column(String(255))
    description: Mapped[str] = mapped_column(Text, default="", server_default="")
    # tensorflow (a SavedModel), pytorch (model.py + handler.py + weights, or a .mar), python (handler.py)
    framework: Mapped[str] = mapped_column(String(32))
    framework_version: Mapped[str] = mapped_column(String(64), default="", server_default="")
    artifact_format: Mapped[str] = mapped_column(String(32))
    artifact_path: Mapped[str] = mapped_column(String(4096))
    size_bytes: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    tags: Mapped[dict] = mapped_column(JSON, default=dict)
    # run, tuning, upload or path; the run (for a tuning: its best trial's run) it came from.
    source_kind: Mapped[str] = mapped_column(String(16))
    source_run_id: Mapped[int | None] = mapped_column(Integer, nullable=True, index=True)
    source_tuning_id: Mapped[int | None] = mapped_column(Integer, nullable=True, index=True)
    source_path: Mapped[str] = mapped_column(String(4096), default="", server_default="")
    created_at: Mapped[datetime] = mapped_column(DateTime)
    updated_at: Mapped[datetime] = mapped_column(DateTime)

    # Ids are never reused (SQLite reuses the highest id after a delete): a deleted object's runs, statistics
    # and idempotency keys must never be taken for a new object's.
    __table_args__ = (UniqueConstraint("owner", "name", name="uq_models_owner_name"), {"sqlite_autoincrement": True})


class Endpoint(Base):
    """An endpoint (EasyMaker's 엔드포인트): a name callers use, and stages, one of them the default."""

    __tablename__ = "endpoints"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    owner: Mapped[str] = mapped_column(String(255), index=True)
    group: Mapped[str] = mapped_column(String(255), default="", server_default="", index=True)
    name: Mapped[str] = mapped_column(String(255), unique=True)
    description: Mapped[str] = mapped_column(Text, default="", server_default="")
    state: Mapped[str] = mapped_column(String(32))
    reason: Mapped[str] = mapped_column(Text, default="", server_default="")
    tags: Mapped[dict] = mapped_column(JSON, default=dict)
    default_stage_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime)
    updated_at: Mapped[datetime] = mapped_column(DateTime)

    stages: Mapped[list[EndpointStage]] = relationship(
        back_populates="endpoint", cascade="all, delete-orphan", order_by="EndpointStage.id")

    __table_args__ = ({"sqlite_autoincrement": True},)


class EndpointStage(Base):
    """A stage of an endpoint: its own URL and stage resources (models at resource paths)."""

    __tablename__ = "endpoint_stages"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    endpoint_id: Mapped[int] = mapped_column(ForeignKey("endpoints.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(255))
    description: Mapped[str] = mapped_column(Text, default="", server_default="")
    state: Mapped[str] = mapped_column(String(32))
    reason: Mapped[str] = mapped_column(Text, default="", server_default="")
    created_at: Mapped[datetime] = mapped_column(DateTime)
    updated_at: Mapped[datetime] = mapped_column(DateTime)

    endpoint: Mapped[Endpoint] = relationship(back_populates="stages")
    resources: Mapped[list[StageResource]] = relationship(
        back_populates="stage", cascade="all, delete-orphan", order_by="StageResource.id")

    __table_args__ = (UniqueConstraint("endpoint_id", "name", name="uq_endpoint_stages_endpoint_name"),
                      {"sqlite_autoincrement": True})


class StageResource(Base):
    """A model served at a resource path of a stage, by ``replicas`` model-server processes.

    Each replica is a run of kind ``serving`` (``Run.parent_id`` is this row's id), so it is
    queued, placed, held and counted in quotas like any run, and never preempted.
    """

    __tablename__ = "stage_resources"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    stage_id: Mapped[int] = mapped_column(ForeignKey("endpoint_stages.id", ondelete="CASCADE"), index=True)
    model_id: Mapped[int] = mapped_column(Integer, index=True)
    resource_path: Mapped[str] = mapped_column(String(1024))
    description: Mapped[str] = mapped_column(Text, default="", server_default="")
    replicas: Mapped[int] = mapped_column(Integer, default=1)
    cpus: Mapped[int] = mapped_column(Integer, default=1)
    memory_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    gpus: Mapped[int] = mapped_column(Integer, default=0)
    state: Mapped[str] = mapped_column(String(32))
    reason: Mapped[str] = mapped_column(Text, default="", server_default="")
    # How many times a replica was started again after its model server ended, and the log's last lines then.
    restarts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    last_failure_log: Mapped[str] = mapped_column(Text, default="", server_default="")
    created_at: Mapped[datetime] = mapped_column(DateTime)
    updated_at: Mapped[datetime] = mapped_column(DateTime)

    stage: Mapped[EndpointStage] = relationship(back_populates="resources")

    __table_args__ = (UniqueConstraint("stage_id", "resource_path", name="uq_stage_resources_stage_path"),
                      {"sqlite_autoincrement": True})


class EndpointStats(Base):
    """One minute of one stage's API statistics (EasyMaker's API 통계): requests, errors, a latency histogram."""

    __tablename__ = "endpoint_stats"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    stage_id: Mapped[int] = mapped_column(Integer, index=True)
    minute: Mapped[datetime] = mapped_column(DateTime)
    requests: Mapped[int] = mapped_column(Integer, default=0)
    errors: Mapped[int] = mapped_column(Integer, default=0)
    # Counts per latency bucket (``serving_stats.BUCKETS_MS`` upper bounds), for p50/p95/p99 over any window.
    latency_buckets: Mapped[list] = mapped_column(JSON, default=list)

    __table_args__ = (UniqueConstraint("stage_id", "minute", name="uq_endpoint_stats_stage_minute"),)


class BatchInference(Base):
    """A batch inference (EasyMaker's 배치 추론): a model over a folder of JSON or JSONL files, as one job.

    The job is a run of kind ``batch`` (``run_id``; ``Run.parent_id`` is this row's id).
    """

    __tablename__ = "batch_inferences"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    owner: Mapped[str] = mapped_column(String(255), index=True)
    group: Mapped[str] = mapped_column(String(255), default="", server_default="", index=True)
    name: Mapped[str] = mapped_column(String(255))
    description: Mapped[str] = mapped_column(Text, default="", server_default="")
    model_id: Mapped[int] = mapped_column(Integer, index=True)
    # The seed's fields: instances (parallel workers), input path and type, globs, output, batch options.
    instances: Mapped[int] = mapped_column(Integer, default=1)
    input_path: Mapped[str] = mapped_column(String(4096))
    input_type: Mapped[str] = mapped_column(String(8))
    include_glob: Mapped[list] = mapped_column(JSON, default=list)
    exclude_glob: Mapped[list] = mapped_column(JSON, default=list)
    output_path: Mapped[str] = mapped_column(String(4096), default="", server_default="")
    batch_size: Mapped[int] = mapped_column(Integer, default=32)
    timeout_seconds: Mapped[float] = mapped_column(Float, default=60.0)
    max_seconds: Mapped[int | None] = mapped_column(Integer, nullable=True)
    cpus: Mapped[int] = mapped_column(Integer, default=1)
    memory_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    gpus: Mapped[int] = mapped_column(Integer, default=0)
    tags: Mapped[dict] = mapped_column(JSON, default=dict)
    state: Mapped[str] = mapped_column(String(40), index=True)
    reason: Mapped[str] = mapped_column(Text, default="", server_default="")
    run_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # {"files", "records", "errors", "seconds"} from the job's summary file once it ended.
    summary: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime)
    started_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    ended_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)

    __table_args__ = ({"sqlite_autoincrement": True},)


class NodeSample(Base):
    """One node's GPUs at one moment (``cluster_history.ClusterHistory``): how many, how many held, how busy.

    ``at`` is whole seconds since the Unix epoch (UTC), not a ``DateTime``: the history API
    averages samples into buckets of so many seconds with plain integer arithmetic in SQL,
    the same on SQLite and PostgreSQL.  ``utilization`` is the mean percent of the node's
    GPUs, ``None`` where nothing measures it (virtual GPUs, nodes NVML cannot reach).
    """

    __tablename__ = "node_samples"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[int] = mapped_column(BigInteger, index=True)
    node: Mapped[str] = mapped_column(String(255))
    gpus_total: Mapped[int] = mapped_column(Integer)
    gpus_allocated: Mapped[int] = mapped_column(Integer)
    utilization: Mapped[float | None] = mapped_column(Float, nullable=True)


class ClusterSample(Base):
    """The queue at one moment: its length, how long its runs have waited so far (median, p95), and the runs
    running (starting, running or stopping: every kind, model-server replicas too).

    ``at`` as in ``NodeSample``; the waits are ``None`` when nothing waits.
    """

    __tablename__ = "cluster_samples"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[int] = mapped_column(BigInteger, index=True)
    queue_length: Mapped[int] = mapped_column(Integer)
    wait_p50_seconds: Mapped[float | None] = mapped_column(Float, nullable=True)
    wait_p95_seconds: Mapped[float | None] = mapped_column(Float, nullable=True)
    running_runs: Mapped[int] = mapped_column(Integer)


class IdHighWater(Base):
    """The largest id ever given, per kind of object whose ids the service picks itself (runs: the dispatcher
    numbers them in memory from the largest at start).  Written when such a row is deleted, so that a deleted
    newest run's id is not handed out again after a restart (revision 0012)."""

    __tablename__ = "id_high_water"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[int] = mapped_column(BigInteger)
