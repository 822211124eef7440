"""RunContext: everything one run needs besides the definition it runs.

::

    ctx = RunContext(root_component_id="agent", project_root=Path("."))
    ctx.register_node_static_input("summarize", SummarizeInput(style="short"))
    result = await AgentRunner(agent, ctx).run()      # sets the run up and completes it

or by hand, as a context manager that records ``completed``, ``failed`` or ``cancelled``::

    async with RunContext(root_component_id="agent", project_root=Path(".")) as ctx:
        await AgentRunner(agent, ctx).run()

A run's side effects (telemetry, the outcome commit, the journal, ...) are run listeners
(:mod:`reprise.run._lifecycle`): the runner wires them, and :meth:`RunContext.setup_run` wires
the standard ones (telemetry, outcome commit) when nobody did. The run's record
(``metadata.json``) is written by :class:`~reprise.run._record.MetadataRecord`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import anyio
from pydantic import BaseModel, TypeAdapter, ValidationError
from pydantic_core import PydanticSerializationError

from reprise.dsl._definition import DefinitionIndex
from reprise.dsl._node import validation_summary
from reprise.dsl._paths import HierarchyPath, validate_id
from reprise.errors import DefinitionError, RunSetupError, StaticInputError
from reprise.run._current import enter_scope, exit_scope
from reprise.run._directory import INITIAL_INPUTS_FILE, STATIC_INPUTS_FILE, RunDirectory
from reprise.run._files import json_problem, read_json, write_json_atomic
from reprise.run._index import RunIndex
from reprise.run._lifecycle import CompletionHook, RunListeners
from reprise.run._names import check_project, check_run_name, generate_run_name
from reprise.run._outcome_repo import OutcomeFile, OutcomeRepository, OutcomeSettings
from reprise.run._record import MetadataRecord
from reprise.run._status import RunStatus

if TYPE_CHECKING:
    from reprise.nodes._human_input import InputHandler
    from reprise.nodes._rate_limit import RateLimit
    from reprise.observability._settings import ObservabilitySettings
    from reprise.observability._telemetry import RunTelemetry

__all__ = ["RunContext", "wire_standard_listeners"]


class RunContext:
    """The environment of one run: ids, directories, inputs, observability, lineage.

    Args:
        root_component_id: id of the root agent or flow; the first segment of every path.
        project_root: the project's directory.
        run_root: where run directories go; default ``project_root / "runs"``.
        observability_settings: tracing/metrics/logging settings; default: everything on,
            written to ``.trace/``, no live export.
        previous_run_id: re-run: the run to reuse results from.
        start_hierarchy_path: re-run: the first element to execute again.
        initial_inputs: values nodes read with :class:`~reprise.dsl._sources.Initial`.
        tags: free-form labels stored in the metadata (experiments use them).
        outcome_repo: commit outcomes to git (default ``True``: ``<run_root>/outcome/<project>``);
            ``False`` turns it off; an :class:`OutcomeSettings` configures it.
        reused_nodes: re-run: how a reused node appears in the new run's directory. ``"link"``
            (default): one relative symbolic link to its directory in the run where it executed
            (cheap; the re-run then depends on that run's directory). ``"copy"``: a directory of
            hard links to its files and its own ``result.json`` (self-contained: to archive or
            ship a run). See docs/reruns.md.
        commit_note: text added to the message of the run's outcome commit, to say why the
            outcomes are what they are (an optimiser puts the feedback behind a new prompt here).
        model_cache: answer AI model nodes' calls identical to earlier ones from the response
            cache beside the run root (``True``: calls with no or zero ``temperature``;
            ``"always"``: every call); a node's own ``cache=`` wins. See docs/nodes.md.
        model_rate_limit: the :class:`~reprise.nodes.RateLimit` of AI model nodes that set none.
        model_calls_dir: where the rate limiters' state and the response cache live (default
            ``<run_root>/.model-calls``); runs that share it share both.
        name: the run's name, unique within its project under the run root; default: a fresh
            one such as ``hungry-brownie-557``.
        project: the project the run belongs to (default: the root component id).
        config: the run's configuration (hyperparameters, settings): a mapping, a dataclass or
            a pydantic model, stored as JSON in the metadata and the run index.
    """

    def __init__(
        self,
        root_component_id: str,
        project_root: Path | str,
        run_root: Path | str | None = None,
        observability_settings: ObservabilitySettings | None = None,
        previous_run_id: str | None = None,
        start_hierarchy_path: str | HierarchyPath | None = None,
        initial_inputs: Mapping[str, Any] | None = None,
        *,
        tags: Mapping[str, str] | None = None,
        outcome_repo: OutcomeSettings | bool = True,
        reused_nodes: str = "link",
        commit_note: str | None = None,
        model_cache: bool | str = False,
        model_rate_limit: RateLimit | None = None,
        model_calls_dir: Path | str | None = None,
        name: str | None = None,
        project: str | None = None,
        config: Mapping[str, Any] | BaseModel | Any = None,
    ) -> None:
        self.root_component_id = validate_id(root_component_id)
        self.project_root = _utf8_path(Path(project_root).resolve(), "project root")
        self.run_root = (
            _utf8_path(Path(run_root).resolve(), "run root") if run_root is not None else self.project_root / "runs"
        )
        self.observability_settings = observability_settings
        self.previous_run_id = previous_run_id
        self.start_hierarchy_path = HierarchyPath(start_hierarchy_path) if start_hierarchy_path is not None else None
        if self.start_hierarchy_path is not None and previous_run_id is None:
            raise RunSetupError("start_hierarchy_path needs previous_run_id (the run to reuse results from)")
        if reused_nodes not in ("link", "copy"):
            raise RunSetupError(f"reused_nodes must be 'link' or 'copy', not {reused_nodes!r}")
        #: ``"link"`` or ``"copy"``: how a re-run lays out the nodes it reuses.
        self.reused_nodes = reused_nodes
        if model_cache not in (False, True, "always"):
            raise RunSetupError(f"model_cache must be True, False or 'always', not {model_cache!r}")
        #: The response cache setting of AI model nodes that set none.
        self.model_cache: bool | str = model_cache
        #: The rate limit of AI model nodes that set none.
        self.model_rate_limit = model_rate_limit
        self._model_calls_dir = Path(model_calls_dir).resolve() if model_calls_dir is not None else None
        self.initial_inputs: dict[str, Any] = dict(initial_inputs or {})
        self.tags: dict[str, str] = dict(tags or {})
        #: The project (``None``: the root component id) and name; the name is drawn by
        #: :meth:`setup_run` when none is given.
        self.project = check_project(project) if project is not None else None
        self.name = check_run_name(name) if name is not None else None
        self.config = _config_json(config)
        #: Text appended to the message of the run's outcome commit (why these outcomes changed).
        self.commit_note = commit_note

        self.run_dir: RunDirectory | None = None
        #: The run's telemetry, set by its telemetry listener when the run starts (``None``
        #: with tracing, metrics and logs all off).
        self.telemetry: RunTelemetry | None = None
        self.status: RunStatus | None = None
        self.error_msg: str | None = None
        #: The run's record (``metadata.json``), from :meth:`setup_run` on.
        self.record: MetadataRecord | None = None
        #: The listeners told of the run's lifecycle (see :meth:`add_listener`).
        self.listeners = RunListeners()
        self._standard_wired = False
        # Static inputs as given (by node id or path), then resolved to definition paths by bind().
        self._static_given: dict[str, BaseModel | Mapping[str, Any]] = {}
        self._static: dict[str, BaseModel] = {}
        self._index: DefinitionIndex | None = None
        if isinstance(outcome_repo, bool):
            outcome_repo = OutcomeSettings(enabled=outcome_repo)
        self.outcome_settings = outcome_repo
        #: Files nodes declared as outcomes (committed to git with the outcome.json files).
        self.declared_outcome_files: list[OutcomeFile] = []
        #: Hierarchy paths of the nodes whose ``outcome.json`` the run holds, in the order they
        #: finished; kept by the executor (``None`` when no runner ran: the run directory is
        #: walked instead). Plain strings: a 10,000-iteration loop keeps 10,000 of them.
        self.outcome_paths: list[str] | None = None
        #: The bytes of the small outcomes among them, for ``.trace/outcomes.json``.
        self.outcome_bytes: dict[str, bytes] = {}
        #: Those of reused nodes: their outcome is the earlier run's, already in its commit.
        self.reused_outcome_paths: set[str] = set()
        # Handlers supplying the input of nodes that require it, by node id or path (None: any).
        self._input_handlers: dict[str | None, InputHandler] = {}

    # -- identity --------------------------------------------------------------------------
    @property
    def run_id(self) -> str:
        """The run id (after :meth:`setup_run`)."""
        return self.require_run_dir().run_id

    @property
    def model_calls_dir(self) -> Path:
        """Model-call state shared by the runs of a run root (the rate limiters and the response
        cache of AI model nodes): ``<run root>/.model-calls`` unless given."""
        return self._model_calls_dir or self.run_root / ".model-calls"

    @property
    def is_setup(self) -> bool:
        """Whether :meth:`setup_run` has been called."""
        return self.run_dir is not None

    @property
    def is_rerun(self) -> bool:
        """Whether this run reuses an earlier run's results."""
        return self.previous_run_id is not None

    def require_run_dir(self) -> RunDirectory:
        """The run directory; :class:`RunSetupError` before :meth:`setup_run`."""
        if self.run_dir is None:
            raise RunSetupError("the run is not set up yet: call setup_run() or use a runner")
        return self.run_dir

    # -- lifecycle -------------------------------------------------------------------------
    def setup_run(self, run_id_prefix: str | None = None) -> RunDirectory:
        """Create the run directory, write its metadata (status ``running``) and tell the run's
        listeners it started (the standard ones start observability; :func:`standard_listeners`
        are wired here when no runner wired them). Calling it twice is an error."""
        if self.run_dir is not None:
            raise RunSetupError(f"run {self.run_dir.run_id} is already set up")
        if self.previous_run_id is not None:
            # Fails early, before a directory is made, if the previous run does not exist.
            RunDirectory.find(self.run_root, self.previous_run_id)
        initial_inputs = self._initial_inputs_json()  # refused before a directory is made
        self.name = self._free_name()
        run_dir = RunDirectory.create(self.run_root, run_id_prefix, rerun=self.is_rerun)
        self.run_dir = run_dir
        self.record = MetadataRecord.start(
            run_dir,
            self.root_component_id,
            previous_run_id=self.previous_run_id,
            start_hierarchy_path=str(self.start_hierarchy_path) if self.start_hierarchy_path else None,
            tags=self.tags,
            name=self.name,
            project=self.project,
            config=self.config,
        )
        self.status = RunStatus.RUNNING
        write_json_atomic(run_dir.static_inputs_dir / INITIAL_INPUTS_FILE, initial_inputs)
        wire_standard_listeners(self)
        try:
            self.listeners.run_started(self)
        except BaseException as exc:
            # The directory exists and says "running": record why it never ran, so it does not
            # read as crashed later.
            self.complete_run(RunStatus.FAILED, f"run set-up failed: {exc}")
            raise
        return run_dir

    def add_listener(self, listener: object) -> None:
        """Tell ``listener`` of the run's lifecycle: it implements any of
        :class:`~reprise.run._lifecycle.RunStarted`, ``ElementStarted``, ``ElementFinished`` and
        ``RunFinished`` (see :mod:`reprise.run._lifecycle`). Listeners are told in the order
        they were added."""
        self.listeners.add(listener)

    def _free_name(self) -> str:
        """The run's name: the one given, refused if a run of the project already has it; else
        a fresh one no run of the project has."""
        project = self.project or self.root_component_id
        index = RunIndex(self.run_root) if self.run_root.is_dir() else None
        if self.name is not None:
            if index is not None and index.name_taken(project, self.name):
                taken = index.runs(project=project, name=self.name, limit=1)[0].run_id
                raise RunSetupError(
                    f"a run named {self.name!r} already exists in project {project!r} ({taken}): "
                    "names are unique within a project"
                )
            return self.name
        for _ in range(20):
            name = generate_run_name()
            if index is None or not index.name_taken(project, name, sync=False):
                return name
        raise RunSetupError(f"could not draw a free run name in project {project!r}")  # pragma: no cover

    @property
    def outcome_repository(self) -> OutcomeRepository | None:
        """The git repository this run commits its outcomes to (``None`` when turned off)."""
        if not self.outcome_settings.enabled:
            return None
        path = self.outcome_settings.path or self.run_root / "outcome" / self.project_root.name
        return OutcomeRepository(path, self.outcome_settings)

    def complete_run(self, status: RunStatus | str = RunStatus.COMPLETED, error_msg: str | None = None) -> None:
        """Tell the run's listeners it finished (the outcome commit, completion hooks, then the
        telemetry, which closes the trace), then record the final status.

        Idempotent: once a run is completed, failed or cancelled, later calls change nothing."""
        status = RunStatus(status)
        if status in (RunStatus.RUNNING, RunStatus.CRASHED):
            raise RunSetupError(f"complete_run cannot record status {status.value!r}")
        run_dir = self.require_run_dir()
        if self.status is not None and self.status.finished:
            return
        record = self.record
        assert record is not None and record.run_dir is run_dir
        self.status = status
        self.error_msg = error_msg
        record.stop()  # the run's one duration, before the commit and the trace are finished
        recorded = False

        def listener_failed(name: str, exc: Exception) -> None:
            nonlocal recorded
            if not recorded:
                recorded = True
                # Also where no log is kept, and when the run's own error is what is raised.
                record.set(completion_hook_error=f"{name}: {str(exc) or repr(exc)}")
            if self.telemetry is not None:
                self.telemetry.logger.error("completion hook failed", hook=name, error=str(exc) or repr(exc))

        try:
            failed = self.listeners.run_finished(self, status, error_msg, listener_failed)
        finally:
            # Recorded whatever went wrong above (the trace could not be written, an
            # interruption while git was waited for): the run must not read as running.
            record.finish(status, error_msg)
        if failed is not None:
            raise failed

    def add_completion_hook(self, hook: CompletionHook) -> None:
        """Call ``hook(context, status)`` when the run completes, before its metadata is final
        (a :class:`~reprise.run._lifecycle.RunFinished` listener in the form of a function).

        Hooks run in the order they were added (the git commit's is added by
        :meth:`setup_run`). A hook that raises does not stop the others: its error is logged,
        and the first one is raised by :meth:`complete_run` once the run is recorded (the run
        keeps its status)."""
        self.listeners.add(hook)

    def annotate(self, **fields: Any) -> None:
        """Add fields to the run's metadata (written now and at completion)."""
        if self.record is None:
            raise RunSetupError("the run is not set up yet")
        self.record.set(**fields)
        self.record.write()

    def __enter__(self) -> RunContext:
        if not self.is_setup:
            self.setup_run()
        # reprise.log()/alert() inside the block write to this run.
        self._current_token = enter_scope(self)
        return self

    def __exit__(self, et: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        token = self.__dict__.pop("_current_token", None)
        if token is not None:
            exit_scope(token)
        if exc is None:
            self.complete_run(RunStatus.COMPLETED)
            return
        try:
            if _is_cancellation(exc):
                self.complete_run(RunStatus.CANCELLED, error_msg=f"cancelled ({type(exc).__name__})")
            else:
                self.complete_run(RunStatus.FAILED, error_msg=str(exc) or type(exc).__name__)
        except Exception:
            # A completion hook failed (complete_run logged it and recorded the run): the
            # block's own error or cancellation is what the caller must see, as with a runner
            # (a hook's error in its place would escape the cancel scope that was cancelled).
            pass

    async def __aenter__(self) -> RunContext:
        return self.__enter__()

    async def __aexit__(
        self, et: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.__exit__(et, exc, tb)

    # -- static inputs ---------------------------------------------------------------------
    def register_node_static_input(self, node_id_or_path: str, model: BaseModel | Mapping[str, Any]) -> None:
        """Give a node a fixed input (its whole input), by node id or hierarchy path.

        A static input takes precedence over the node's bindings. It is validated against the
        node's input model when a runner binds the definition, before anything runs."""
        if not isinstance(model, (BaseModel, Mapping)):
            raise StaticInputError(f"static input for {node_id_or_path!r} must be a pydantic model or a mapping")
        self._static_given[node_id_or_path] = model
        if self._index is not None:
            self._bind_static(node_id_or_path, model)

    def read_static_inputs(self, path: Path | str | None = None) -> dict[str, Any]:
        """Register the static inputs in a JSON file ``{"node id or path": {...input...}}``.

        Default file: ``project_root/static_inputs/static_inputs.json``. Returns what was read."""
        file = Path(path) if path is not None else self.project_root / "static_inputs" / STATIC_INPUTS_FILE
        try:
            data = read_json(file)
        except FileNotFoundError:
            raise StaticInputError(f"static inputs file not found: {file}") from None
        except ValueError as exc:
            raise StaticInputError(f"{file}: not valid JSON: {exc}") from None
        if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
            raise StaticInputError(f"{file}: expected an object mapping node ids to input objects")
        for key, value in data.items():
            try:
                self.register_node_static_input(key, value)
            except StaticInputError as exc:
                raise StaticInputError(f"{file}: {exc}") from None
        return data

    def static_input(self, definition_path: str) -> BaseModel | None:
        """The validated static input of the node at ``definition_path``, if any."""
        return self._static.get(definition_path)

    # -- human input -----------------------------------------------------------------------
    def register_input_handler(self, handler: InputHandler, node: str | None = None) -> None:
        """Supply the input of nodes with ``input_required`` (see ``reprise.nodes._human_input``):
        ``handler`` is ``async (InputRequest) -> mapping | model``, for the node ``node`` (id or
        path) or, with ``node=None``, for every node without a handler of its own. A static input
        still wins: the handler is only asked for nodes that have none."""
        if not callable(handler):
            raise RunSetupError(f"an input handler must be callable, got {type(handler).__name__}")
        self._input_handlers[node] = handler

    def input_handler_for(self, definition_path: str) -> InputHandler | None:
        """The handler for the node at ``definition_path``: its own, else the default, else ``None``."""
        handlers = self._input_handlers
        for key, handler in handlers.items():
            if key is None:
                continue
            if key == definition_path:
                return handler
            if self._index is not None:
                try:
                    if self._index.resolve_node(key) == definition_path:
                        return handler
                except DefinitionError:
                    continue
        return handlers.get(None)

    @property
    def static_inputs(self) -> Mapping[str, BaseModel]:
        """Validated static inputs by node definition path (after binding)."""
        return self._static

    @property
    def bound_index(self) -> DefinitionIndex | None:
        """The definition bound by a runner, if any."""
        return self._index

    def bind(self, index: DefinitionIndex) -> None:
        """Attach the validated definition: check root id and static inputs. Runners call this
        before anything runs; errors here leave no node executed."""
        if index.root_id != self.root_component_id:
            raise DefinitionError(
                f"definition root id {index.root_id!r} does not match root_component_id {self.root_component_id!r}"
            )
        self._index = index
        self._static = {}
        for key, model in self._static_given.items():
            self._bind_static(key, model)
        if self.run_dir is not None:
            self.save_static_inputs()

    def _bind_static(self, key: str, model: BaseModel | Mapping[str, Any]) -> None:
        assert self._index is not None
        try:
            path = self._index.resolve_node(key)
        except DefinitionError as exc:
            raise StaticInputError(f"static input: {exc.message}") from None
        node = self._index.nodes[path].node
        input_model = node.input_model
        if input_model is None:
            raise StaticInputError(f"static input given for {path}, but {node.name} takes no input", path=path)
        data = model.model_dump() if isinstance(model, BaseModel) else model
        try:
            self._static[path] = (
                model
                if isinstance(model, BaseModel) and type(model) is input_model
                else input_model.model_validate(data)
            )
        except ValidationError as exc:
            raise StaticInputError(
                f"static input does not validate against {input_model.__name__}: {validation_summary(exc)}", path=path
            ) from None

    def save_initial_inputs(self) -> None:
        """Write the initial inputs to ``static_inputs/initial_inputs.json``."""
        write_json_atomic(self.require_run_dir().static_inputs_dir / INITIAL_INPUTS_FILE, self._initial_inputs_json())

    def _initial_inputs_json(self) -> Any:
        """The initial inputs as the JSON data ``initial_inputs.json`` holds; a
        :class:`RunSetupError` naming the key when a value cannot be written as JSON and read
        back as it was (an arbitrary object, a NaN or infinite float)."""
        for key, value in self.initial_inputs.items():
            problem = json_problem(value)
            if problem is not None:
                where, what = problem
                raise RunSetupError(f"initial_inputs[{key!r}]{where}: {what}")
        try:
            return _jsonable(self.initial_inputs)
        except PydanticSerializationError as exc:  # what json_problem cannot see (a key, say)
            raise RunSetupError(f"initial_inputs cannot be written as JSON: {exc}") from None

    def save_static_inputs(self) -> None:
        """Write the bound static inputs to ``static_inputs/static_inputs.json``."""
        run_dir = self.require_run_dir()
        data = {path: model.model_dump(mode="json") for path, model in self._static.items()}
        write_json_atomic(run_dir.static_inputs_dir / STATIC_INPUTS_FILE, data)

    def __repr__(self) -> str:
        rid = self.run_dir.run_id if self.run_dir else "not set up"
        return f"RunContext({self.root_component_id!r}, run={rid}, status={self.status})"


def _utf8_path(path: Path, what: str) -> Path:
    """``path``, if its name can be written in a run's JSON files (UTF-8); else the error naming
    it, before anything is made (a name that is not, from bytes the file system allows, would
    fail the run at its first metadata write)."""
    try:
        str(path).encode("utf-8")
    except UnicodeEncodeError:
        raise RunSetupError(f"the {what} {path!r} is not valid UTF-8: a run records its paths as JSON") from None
    return path


def _config_json(config: Any) -> dict[str, Any] | None:
    """A run's config as the JSON object its metadata holds; a :class:`RunSetupError` naming
    the key whose value JSON cannot hold as it is."""
    if config is None:
        return None
    if isinstance(config, BaseModel):
        data = config.model_dump(mode="json")
    elif dataclasses.is_dataclass(config) and not isinstance(config, type):
        data = dataclasses.asdict(config)
    elif isinstance(config, Mapping):
        data = dict(config)
    else:
        raise RunSetupError(
            f"a run's config must be a mapping, a dataclass or a pydantic model, got {type(config).__name__}"
        )
    for key, value in data.items():
        if not isinstance(key, str):
            raise RunSetupError(f"config key {key!r}: keys must be strings")
        problem = json_problem(value)
        if problem is not None:
            where, what = problem
            raise RunSetupError(f"config[{key!r}]{where}: {what}")
    try:
        result: dict[str, Any] = _jsonable(data)
    except PydanticSerializationError as exc:
        raise RunSetupError(f"the config cannot be written as JSON: {exc}") from None
    return result


def wire_standard_listeners(ctx: RunContext) -> None:
    """Add the listeners every run has, once: its telemetry (outer: started first, finished
    last) and, with outcomes on, the outcome commit. Runners wire them before their own;
    :meth:`RunContext.setup_run` wires them when no runner did."""
    if ctx._standard_wired:
        return
    ctx._standard_wired = True
    from reprise.observability._listener import TelemetryListener
    from reprise.run._commit import CommitOutcomes

    ctx.listeners.add(TelemetryListener(ctx.observability_settings), outer=True)
    repo = ctx.outcome_repository
    if repo is not None:
        ctx.listeners.add(CommitOutcomes(repo))


def _is_cancellation(exc: BaseException) -> bool:
    from reprise.errors import RunCancelledError

    if isinstance(exc, (KeyboardInterrupt, RunCancelledError)):
        return True
    try:
        return isinstance(exc, anyio.get_cancelled_exc_class())
    except RuntimeError:
        # No event loop: the sync context manager in a plain script, where nothing is cancelled.
        return False


_ANY_ADAPTER: TypeAdapter[Any] = TypeAdapter(Any)


def _jsonable(data: Mapping[str, Any]) -> Any:
    return _ANY_ADAPTER.dump_python(dict(data), mode="json")
