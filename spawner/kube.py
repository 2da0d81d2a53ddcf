"""A KubeSpawner for EasyMaker-style notebooks: a data volume, an image, an instance type, tags.

What the seed's "노트북 생성" page asks for, built on KubeSpawner's own mechanisms:

* **data storage**: a PersistentVolumeClaim per user and server name (KubeSpawner's
  ``pvc_name_template``), mounted at ``/root/easymaker``, sized when the notebook is
  first created in 10 GB steps up to 2,040 GB (user option ``storage_gb``), kept when
  the notebook stops and when it is deleted (``delete_pvc = False``). The size is
  fixed once the claim exists, as in the seed; it is remembered in the spawner state.
  GB are taken as GiB (``20`` -> ``20Gi``), as block-storage services count them;
* **image and instance type**: ``profile_list``, built from :attr:`NothingKubeSpawner.instance_types`
  and :attr:`NothingKubeSpawner.images`: each instance type is a profile (CPU, memory,
  ``nvidia.com/gpu``) whose ``image`` option offers the images of its core type;
* **tags**: up to 10 ``key=value`` pairs (user option ``tags``), set as pod labels
  under :attr:`NothingKubeSpawner.tag_label_prefix`, so they can be selected on
  (``kubectl get pods -l tags.nothing.ai/team=vision``);
* ``NOTHING_EASYMAKER_DIR=/root/easymaker`` in the server's environment, read by the
  cont-init runner and the kernel finder inside the image.

The user options are checked by one pure function, :func:`notebook_options`, on the
spawn form and again when a server starts (spawns through the REST API skip the form).
"""

from __future__ import annotations

import html
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from jupyterhub.utils import maybe_future
from kubernetes_asyncio.client.models import V1PersistentVolumeClaimVolumeSource, V1Volume, V1VolumeMount
from kubespawner import KubeSpawner
from traitlets import Dict, Int, List, Unicode, default

from .gpu_hold import SchedulerGpusMixin

STORAGE_STEP_GB = 10
STORAGE_MAX_GB = 2040
MAX_TAGS = 10
EASYMAKER_VOLUME = "easymaker"
# Kubernetes label names (the part after the prefix) and values: 63 characters at most,
# letters, digits, '-', '_', '.', beginning and ending with a letter or digit.
_LABEL_TEXT = re.compile(r"[A-Za-z0-9]([A-Za-z0-9_.-]{0,61}[A-Za-z0-9])?")
FRAMEWORK_NAMES = {"python": "Python", "pytorch": "PyTorch", "tensorflow": "TensorFlow"}

DEFAULT_IMAGES = {
    f"{core}-{framework}": f"nothingai/notebook:{framework}-{core}"
    for core in ("cpu", "gpu") for framework in ("python", "pytorch", "tensorflow")
}
DEFAULT_INSTANCE_TYPES = [
    {"slug": "cpu-small", "display_name": "CPU small: 2 vCPU, 8 GB", "cpu": 2, "memory": "8G", "gpus": 0},
    {"slug": "cpu-large", "display_name": "CPU large: 8 vCPU, 32 GB", "cpu": 8, "memory": "32G", "gpus": 0},
    {"slug": "gpu-1", "display_name": "GPU: 1 GPU, 8 vCPU, 64 GB", "cpu": 8, "memory": "64G", "gpus": 1},
    {"slug": "gpu-4", "display_name": "GPU: 4 GPUs, 32 vCPU, 256 GB", "cpu": 32, "memory": "256G", "gpus": 4},
]


@dataclass(frozen=True)
class NotebookOptions:
    """A notebook's checked choices: the profile (instance type) slug, the image choice
    (``None`` when the profile has no ``image`` option), the data storage size, the tags."""

    profile: str | None
    image: str | None
    storage_gb: int
    tags: tuple[tuple[str, str], ...]

    @property
    def storage_capacity(self) -> str:
        return f"{self.storage_gb}Gi"


def parse_storage_gb(value: Any) -> int:
    """``value`` as a whole number of GB: a multiple of 10 from 10 to 2,040."""
    if isinstance(value, bool) or not isinstance(value, (int, str, float)):
        raise ValueError(f"storage_gb must be a number of GB, not {value!r}")
    try:
        number = float(value)
    except ValueError:
        raise ValueError(f"storage_gb must be a number of GB, not {value!r}") from None
    if number != int(number) or number % STORAGE_STEP_GB or not STORAGE_STEP_GB <= number <= STORAGE_MAX_GB:
        raise ValueError(f"storage_gb must be a multiple of {STORAGE_STEP_GB} from {STORAGE_STEP_GB} "
                         f"to {STORAGE_MAX_GB:,} GB, not {value}")
    return int(number)


def parse_tags(value: Any) -> tuple[tuple[str, str], ...]:
    """``value`` (a mapping of key to value) as checked tag pairs, at most 10."""
    if value is None:
        return ()
    if not isinstance(value, Mapping):
        raise ValueError("tags must be an object of key-value pairs, e.g. {\"team\": \"vision\"}")
    if len(value) > MAX_TAGS:
        raise ValueError(f"at most {MAX_TAGS} tags are allowed, not {len(value)}")
    for key, text in value.items():
        if not isinstance(key, str) or not _LABEL_TEXT.fullmatch(key):
            raise ValueError(f"tag key {key!r} must be 1-63 letters, digits, '-', '_' or '.', "
                             "beginning and ending with a letter or digit")
        if not isinstance(text, str) or (text and not _LABEL_TEXT.fullmatch(text)):
            raise ValueError(f"the value of tag {key!r} must be at most 63 letters, digits, '-', '_' "
                             "or '.', beginning and ending with a letter or digit")
    return tuple(value.items())


def parse_tag_lines(text: str) -> dict[str, str]:
    """The spawn form's tags box, one ``key=value`` per line, as a mapping (blank lines ignored)."""
    tags: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        key, sep, value = line.partition("=")
        key, value = key.strip(), value.strip()
        if not sep:
            raise ValueError(f"tag line {line.strip()!r} must look like key=value")
        if key in tags:
            raise ValueError(f"tag {key!r} is given twice")
        tags[key] = value
    return tags


def resolve_storage_gb(requested: Any, *, default_gb: int, fixed_gb: int | None = None) -> int:
    """The data storage size to use: the requested one, checked, else the fixed or the default one.

    ``fixed_gb`` is the size of the claim the notebook already has; asking for another
    size is an error, because a claim cannot shrink and growing it is not offered (seed).
    """
    size = parse_storage_gb(requested) if requested not in (None, "") else None
    if fixed_gb is not None and size not in (None, fixed_gb):
        raise ValueError(f"the data storage of this notebook is {fixed_gb} GB and cannot be "
                         f"changed after creation (asked for {size} GB)")
    return size or fixed_gb or parse_storage_gb(default_gb)


def build_profile_list(instance_types: list[dict], images: Mapping[str, str]) -> list[dict]:
    """KubeSpawner profiles, one per instance type, each offering the images of its core type.

    Image keys are ``<core>-<framework>`` (``gpu-pytorch``); an instance type with
    ``gpus`` > 0 offers the ``gpu-`` images, any other the ``cpu-`` images, because a
    notebook can only move between instance types of the same core type.
    """
    profiles = []
    for index, itype in enumerate(instance_types):
        gpus = int(itype.get("gpus", 0))
        core = "gpu" if gpus else "cpu"
        choices = {}
        for key, image in images.items():
            key_core, _, framework = key.partition("-")
            if key_core == core:
                choices[key] = {"display_name": f"{core.upper()} {FRAMEWORK_NAMES.get(framework, framework)}",
                                "kubespawner_override": {"image": image}}
        override: dict[str, Any] = {"cpu_limit": float(itype["cpu"]), "cpu_guarantee": float(itype["cpu"]),
                                    "mem_limit": itype["memory"], "mem_guarantee": itype["memory"]}
        if gpus:
            override["extra_resource_limits"] = {"nvidia.com/gpu": str(gpus)}
        override.update(itype.get("kubespawner_override", {}))
        profile = {"slug": itype["slug"], "display_name": itype["display_name"],
                   "kubespawner_override": override, "default": index == 0}
        if choices:
            profile["profile_options"] = {"image": {"display_name": "Image", "choices": choices}}
        profiles.append(profile)
    return profiles


def notebook_options(user_options: Mapping[str, Any], profile_list: list[dict], *,
                     default_storage_gb: int, fixed_storage_gb: int | None = None) -> NotebookOptions:
    """Check ``user_options`` against an initialized ``profile_list``; raise ``ValueError`` with
    a message for the user when anything is wrong.

    ``fixed_storage_gb`` is the size of the claim this notebook already has: asking for
    another size is an error, asking for none means that size.
    """
    slug = user_options.get("profile")
    image = user_options.get("image")
    profile = None
    if profile_list:
        profile = next((p for p in profile_list if p["slug"] == slug), None) if slug else \
            next((p for p in profile_list if p.get("default")), profile_list[0])
        if profile is None:
            raise ValueError(f"no instance type {slug!r}; choose one of "
                             f"{', '.join(p['slug'] for p in profile_list)}")
        choices = profile.get("profile_options", {}).get("image", {}).get("choices", {})
        if image is not None and image not in choices:
            raise ValueError(f"image {image!r} is not offered for instance type {profile['slug']!r}; "
                             f"choose one of {', '.join(choices) or 'none'}")
        if image is None and choices:
            image = next((k for k, c in choices.items() if c.get("default")), next(iter(choices)))
    elif slug:
        raise ValueError(f"no instance type {slug!r}; none are configured")
    storage = resolve_storage_gb(user_options.get("storage_gb"), default_gb=default_storage_gb,
                                 fixed_gb=fixed_storage_gb)
    return NotebookOptions(profile["slug"] if profile else None, image, storage,
                           parse_tags(user_options.get("tags")))


class NothingKubeSpawner(SchedulerGpusMixin, KubeSpawner):
    """KubeSpawner with the data volume, image choice, instance types and tags of an EasyMaker notebook."""

    images = Dict(
        DEFAULT_IMAGES,
        config=True,
        help="""Notebook images by ``<core>-<framework>`` key, built from ``images/notebook``.

        Example: ``c.NothingKubeSpawner.images = {"cpu-python": "registry.example/nb:py-cpu",
        "gpu-pytorch": "registry.example/nb:torch-gpu"}``
        """,
    )

    instance_types = List(
        DEFAULT_INSTANCE_TYPES,
        config=True,
        help="""Instance types offered on the spawn form; each becomes a profile.

        Keys: ``slug``, ``display_name``, ``cpu``, ``memory`` (a KubeSpawner byte string),
        ``gpus`` and optionally ``kubespawner_override`` (merged last, e.g. a node selector).
        Example: ``c.NothingKubeSpawner.instance_types = [{"slug": "a100", "display_name": "1 A100",
        "cpu": 8, "memory": "64G", "gpus": 1, "kubespawner_override": {"node_selector": {"gpu": "a100"}}}]``
        """,
    )

    default_storage_gb = Int(
        20,
        config=True,
        help="""Data storage size in GB when a new notebook's options do not say.

        Example: ``c.NothingKubeSpawner.default_storage_gb = 100``
        """,
    )

    easymaker_dir = Unicode(
        "/root/easymaker",
        config=True,
        help="""Where the data volume is mounted; given to the server as ``NOTHING_EASYMAKER_DIR``.

        Example: ``c.NothingKubeSpawner.easymaker_dir = "/home/jovyan/easymaker"``
        """,
    )

    tag_label_prefix = Unicode(
        "tags.nothing.ai/",
        config=True,
        help="""Prefix of the pod labels that carry a notebook's tags (a DNS subdomain and ``/``).

        Example: ``c.NothingKubeSpawner.tag_label_prefix = "tags.example.com/"``
        """,
    )

    #: The size of this server's claim, kept in the spawner state; fixed once the claim exists.
    claim_storage_gb: int | None = None

    @property
    def fixed_storage_gb(self) -> int | None:
        return self.claim_storage_gb if self._pvc_exists else None

    @default("profile_list")
    def _profile_list_default(self) -> list[dict]:
        return build_profile_list(self.instance_types, self.images)

    @default("image")
    def _image_default(self) -> str:
        return next(iter(self.images.values()))

    @default("cmd")
    def _cmd_default(self) -> list[str]:
        # The images' entrypoint runs cont-init.d, then this command with get_args().
        return ["jupyterhub-singleuser"]

    @default("storage_pvc_ensure")
    def _storage_pvc_ensure_default(self) -> bool:
        return True

    @default("delete_pvc")
    def _delete_pvc_default(self) -> bool:
        return False

    @default("options_form")
    def _options_form_default(self):
        return self._render_form_for

    @default("options_from_form")
    def _options_from_form_default(self):
        return self._nothing_options_from_form

    async def _initialized_profile_list(self) -> list[dict]:
        profile_list = self._sorted_dict_values(self.profile_list)
        if callable(profile_list):
            profile_list = await maybe_future(profile_list(self))
        return self._get_initialized_profile_list(profile_list)

    def checked_options(self, profile_list: list[dict]) -> NotebookOptions:
        return notebook_options(self.user_options or {}, profile_list,
                                default_storage_gb=self.default_storage_gb,
                                fixed_storage_gb=self.fixed_storage_gb)

    async def load_user_options(self) -> None:
        """Check every option first, then let KubeSpawner apply the profile, then ours."""
        options = self.checked_options(await self._initialized_profile_list())
        await super().load_user_options()
        self.storage_capacity = options.storage_capacity
        self.extra_labels = self._with_tags(self.extra_labels, options.tags)
        self.storage_extra_labels = self._with_tags(self.storage_extra_labels, options.tags)
        self.claim_storage_gb = options.storage_gb

    def _with_tags(self, labels: dict, tags: tuple[tuple[str, str], ...]) -> dict:
        """``labels`` with the tag labels of this start replacing those of an earlier start."""
        kept = {k: v for k, v in labels.items() if not k.startswith(self.tag_label_prefix)}
        return {**kept, **{self.tag_label_prefix + k: v for k, v in tags}}

    async def get_pod_manifest(self):
        """KubeSpawner's pod with the data volume mounted, whatever ``volumes`` is configured to."""
        pod = await super().get_pod_manifest()
        spec = pod.spec
        if not any(v.name == EASYMAKER_VOLUME for v in spec.volumes or []):
            spec.volumes = [*(spec.volumes or []), V1Volume(
                name=EASYMAKER_VOLUME,
                persistent_volume_claim=V1PersistentVolumeClaimVolumeSource(claim_name=self.pvc_name))]
        container = spec.containers[0]
        if not any(m.mount_path == self.easymaker_dir for m in container.volume_mounts or []):
            container.volume_mounts = [*(container.volume_mounts or []),
                                       V1VolumeMount(name=EASYMAKER_VOLUME, mount_path=self.easymaker_dir)]
        return pod

    def get_env(self) -> dict[str, str]:
        env = super().get_env()
        env["NOTHING_EASYMAKER_DIR"] = self.easymaker_dir
        return env

    def requested_gpus(self) -> int:
        """The ``nvidia.com/gpu`` limit of the chosen instance type (applied by load_user_options)."""
        return int((self.extra_resource_limits or {}).get("nvidia.com/gpu", 0))

    async def start(self):
        # Kubernetes picks the devices; the scheduler counts them against the user's and
        # group's quotas (and refuses, with the reason, a notebook over a cap).
        return await self.start_holding_gpus(self.requested_gpus(), super().start, external=True)

    async def stop(self, now=False):
        await super().stop(now=now)
        await self.release_gpus()

    def get_state(self) -> dict:
        state = super().get_state()
        if self.fixed_storage_gb:
            state["storage_gb"] = self.fixed_storage_gb
        state.update(self.gpu_state())
        return state

    def load_state(self, state: dict) -> None:
        super().load_state(state)
        if "storage_gb" in state:
            self.claim_storage_gb = int(state["storage_gb"])
        self.load_gpu_state(state)

    def _nothing_options_from_form(self, formdata: dict[str, list[str]]) -> dict[str, Any]:
        """KubeSpawner's profile fields plus ``storage_gb`` and the ``tags`` box, checked early
        so that a mistake comes back on the form rather than as a failed spawn."""
        formdata = dict(formdata)
        storage = (formdata.pop("storage_gb", None) or [""])[0].strip()
        tags = parse_tag_lines((formdata.pop("tags", None) or [""])[0])
        options = self._options_from_form(formdata)
        if storage:
            options["storage_gb"] = resolve_storage_gb(storage, default_gb=self.default_storage_gb,
                                                       fixed_gb=self.fixed_storage_gb)
        if tags:
            options["tags"] = dict(parse_tags(tags))
        return options

    async def _render_form_for(self, spawner) -> str:
        """The profile form with the storage and tag fields under it, rendered at request time
        so that the storage field shows the fixed size once the notebook exists."""
        return self._render_options_form(await self._initialized_profile_list()) + self._extra_fields_html()

    def _extra_fields_html(self) -> str:
        """The storage and tag fields, pre-filled only with values that pass the checks
        (``user_options`` may hold anything a REST call sent)."""
        options = self.user_options or {}
        fixed = self.fixed_storage_gb
        try:
            size = resolve_storage_gb(options.get("storage_gb"), default_gb=self.default_storage_gb,
                                      fixed_gb=fixed)
        except ValueError:
            size = fixed or self.default_storage_gb
        try:
            tags = parse_tags(options.get("tags"))
        except ValueError:
            tags = ()
        tag_text = "\n".join(f"{k}={v}" for k, v in tags)
        note = ("Fixed when the notebook was created." if fixed else
                f"{STORAGE_STEP_GB} GB steps up to {STORAGE_MAX_GB:,} GB; it cannot be changed later.")
        return (
            '<div class="form-group">'
            f'<label for="nothing-storage-gb">Data storage at {html.escape(self.easymaker_dir)} (GB)</label>'
            f'<input type="number" class="form-control" id="nothing-storage-gb" name="storage_gb" '
            f'min="{STORAGE_STEP_GB}" max="{STORAGE_MAX_GB}" step="{STORAGE_STEP_GB}" '
            f'value="{size}"{" readonly" if fixed else ""} required>'
            f'<p class="help-block">{note}</p></div>'
            '<div class="form-group">'
            f'<label for="nothing-tags">Tags: up to {MAX_TAGS}, one key=value per line</label>'
            f'<textarea class="form-control" id="nothing-tags" name="tags" rows="3">{html.escape(tag_text)}</textarea>'
            "</div>"
        )
