"""Pod and claim manifests of NothingKubeSpawner, checked against the published Kubernetes schema.

There is no Kubernetes API server here: the spawner is a real NothingKubeSpawner for
a real JupyterHub user (in-memory hub database), given a kubeconfig that points at
nothing; the manifests it builds are validated with ``kubernetes_validate`` (the
official OpenAPI schema of Kubernetes 1.37, strict mode) and their key parts compared.
"""

from __future__ import annotations

import kubernetes_validate
import pytest
from traitlets.config import Config

from nothing.spawner.kube import (
    NothingKubeSpawner,
    build_profile_list,
    notebook_options,
    parse_storage_gb,
    parse_tag_lines,
    parse_tags,
)

KUBE_VERSION = "1.37.0"
STORAGE_MESSAGE = "storage_gb must be a multiple of 10 from 10 to 2,040 GB"


async def manifests(spawner: NothingKubeSpawner) -> tuple[dict, dict]:
    await spawner.load_user_options()
    serialize = spawner.api.api_client.sanitize_for_serialization
    pod = serialize(await spawner.get_pod_manifest())
    pvc = serialize(spawner.get_pvc_manifest())
    kubernetes_validate.validate(pod, KUBE_VERSION, strict=True)
    kubernetes_validate.validate(pvc, KUBE_VERSION, strict=True)
    return pod, pvc


async def test_a_gpu_notebook_gets_its_claim_gpu_image_and_tags(make_spawner):
    spawner = make_spawner("gpu-work", {"profile": "gpu-1", "image": "gpu-pytorch", "storage_gb": 20,
                                        "tags": {"team": "vision", "cost-center": "r-and-d"}})

    pod, pvc = await manifests(spawner)

    container = pod["spec"]["containers"][0]
    assert pvc["metadata"]["name"] == "claim-alice--gpu-work"
    assert pvc["spec"]["resources"] == {"requests": {"storage": "20Gi"}}
    assert pvc["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert pod["spec"]["volumes"] == [
        {"name": "easymaker", "persistentVolumeClaim": {"claimName": "claim-alice--gpu-work"}}]
    assert container["volumeMounts"] == [{"mountPath": "/root/easymaker", "name": "easymaker"}]
    assert container["image"] == "nothingai/notebook:pytorch-gpu"
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert container["resources"]["limits"]["cpu"] == container["resources"]["requests"]["cpu"] == 8.0
    assert container["args"] == ["jupyterhub-singleuser"]
    assert {"name": "NOTHING_EASYMAKER_DIR", "value": "/root/easymaker"} in container["env"]
    for labels in (pod["metadata"]["labels"], pvc["metadata"]["labels"]):
        assert {k: v for k, v in labels.items() if k.startswith("tags.nothing.ai/")} == {
            "tags.nothing.ai/team": "vision", "tags.nothing.ai/cost-center": "r-and-d"}
    assert spawner.delete_pvc is False
    assert spawner.storage_pvc_ensure is True


async def test_without_options_a_notebook_is_the_first_cpu_type_with_20_gb(make_spawner):
    pod, pvc = await manifests(make_spawner())

    container = pod["spec"]["containers"][0]
    assert pvc["metadata"]["name"] == "claim-alice"
    assert pvc["spec"]["resources"] == {"requests": {"storage": "20Gi"}}
    assert container["image"] == "nothingai/notebook:python-cpu"
    assert "nvidia.com/gpu" not in container["resources"]["limits"]
    assert container["resources"]["limits"]["cpu"] == 2.0


async def test_the_largest_storage_is_2040_gb(make_spawner):
    _, pvc = await manifests(make_spawner(user_options={"storage_gb": "2040"}))
    assert pvc["spec"]["resources"] == {"requests": {"storage": "2040Gi"}}


@pytest.mark.parametrize("size", [15, 0, 2050, -10, 20.5, "abc", True, [20]])
async def test_a_bad_storage_size_is_refused_before_anything_is_built(make_spawner, size):
    spawner = make_spawner(user_options={"storage_gb": size})
    with pytest.raises(ValueError, match="storage_gb must be"):
        await spawner.load_user_options()
    assert spawner.storage_capacity is None


@pytest.mark.parametrize("size", [15, 0, 2050])
def test_storage_sizes_must_be_10_gb_steps_up_to_2040(size):
    with pytest.raises(ValueError) as info:
        parse_storage_gb(size)
    assert str(info.value) == f"{STORAGE_MESSAGE}, not {size}"
    assert [parse_storage_gb(v) for v in (10, "20", 2040, 30.0)] == [10, 20, 2040, 30]


async def test_eleven_tags_are_refused(make_spawner):
    spawner = make_spawner(user_options={"tags": {f"k{i}": "v" for i in range(11)}})
    with pytest.raises(ValueError, match="^at most 10 tags are allowed, not 11$"):
        await spawner.load_user_options()
    assert len(parse_tags({f"k{i}": "v" for i in range(10)})) == 10


@pytest.mark.parametrize("tags, message", [
    ({"bad key": "v"}, "tag key 'bad key' must be 1-63 letters"),
    ({"-x": "v"}, "tag key '-x' must be"),
    ({"x" * 64: "v"}, "must be 1-63 letters"),
    ({"team": "a b"}, "the value of tag 'team' must be at most 63"),
    ({"team": 3}, "the value of tag 'team' must be"),
    (["team", "vision"], "tags must be an object of key-value pairs"),
])
def test_tags_that_cannot_be_labels_are_refused(tags, message):
    with pytest.raises(ValueError, match=message):
        parse_tags(tags)


def test_an_empty_tag_value_is_allowed():
    assert parse_tags({"draft": ""}) == (("draft", ""),)


async def test_an_image_of_the_other_core_type_is_refused(make_spawner):
    spawner = make_spawner(user_options={"profile": "cpu-small", "image": "gpu-pytorch"})
    with pytest.raises(ValueError, match="image 'gpu-pytorch' is not offered for instance type 'cpu-small'; "
                                         "choose one of cpu-python, cpu-pytorch, cpu-tensorflow"):
        await spawner.load_user_options()


async def test_an_unknown_instance_type_is_refused(make_spawner):
    spawner = make_spawner(user_options={"profile": "tpu-9"})
    with pytest.raises(ValueError, match="no instance type 'tpu-9'; choose one of cpu-small, cpu-large, gpu-1, gpu-4"):
        await spawner.load_user_options()


async def test_the_storage_size_is_fixed_once_the_claim_exists(make_spawner):
    first = make_spawner("data", {"storage_gb": 40})
    await first.load_user_options()
    first._pvc_exists = True  # what KubeSpawner sets once the API server has created the claim
    state = first.get_state()
    assert state["storage_gb"] == 40 and state["pvc_name"] == "claim-alice--data"

    # The hub restarts: a new spawner object gets the saved state.
    later = make_spawner("data", {"storage_gb": 60}, state=state)
    with pytest.raises(ValueError, match="is 40 GB and cannot be changed after creation"):
        await later.load_user_options()
    later.user_options = {}
    _, pvc = await manifests(later)
    assert pvc["spec"]["resources"] == {"requests": {"storage": "40Gi"}}
    later.clear_state()
    assert later.get_state()["storage_gb"] == 40


async def test_tags_of_a_previous_start_do_not_stay_on_the_pod(make_spawner):
    spawner = make_spawner(user_options={"tags": {"old": "1"}})
    await spawner.load_user_options()
    spawner.user_options = {"tags": {"new": "2"}}

    pod, _ = await manifests(spawner)

    assert {k: v for k, v in pod["metadata"]["labels"].items() if k.startswith("tags.")} == {
        "tags.nothing.ai/new": "2"}


async def test_configured_volumes_keep_the_data_volume(make_spawner):
    config = Config()
    config.NothingKubeSpawner.volumes = [{"name": "shm", "emptyDir": {"medium": "Memory"}}]
    config.NothingKubeSpawner.volume_mounts = [{"name": "shm", "mountPath": "/dev/shm"}]
    pod, _ = await manifests(make_spawner(config=config))

    assert [v["name"] for v in pod["spec"]["volumes"]] == ["shm", "easymaker"]
    assert pod["spec"]["containers"][0]["volumeMounts"] == [
        {"mountPath": "/dev/shm", "name": "shm"}, {"mountPath": "/root/easymaker", "name": "easymaker"}]


async def test_the_spawn_form_reads_storage_and_tag_lines(make_spawner):
    spawner = make_spawner()
    form = {"profile": ["gpu-1"], "profile-option-gpu-1--image": ["gpu-pytorch"],
            "storage_gb": ["40"], "tags": ["team=vision\n\n project = resnet \n"]}

    assert spawner.run_options_from_form(form) == {
        "profile": "gpu-1", "image": "gpu-pytorch", "storage_gb": 40,
        "tags": {"team": "vision", "project": "resnet"}}
    with pytest.raises(ValueError, match=STORAGE_MESSAGE):
        spawner.run_options_from_form({**form, "storage_gb": ["15"]})
    with pytest.raises(ValueError, match="tag 'team' is given twice"):
        spawner.run_options_from_form({**form, "tags": ["team=a\nteam=b"]})

    html = await spawner.get_options_form()
    assert 'name="storage_gb" min="10" max="2040" step="10" value="20" required>' in html
    assert 'name="profile-option-gpu-1--image"' in html


async def test_the_form_shows_the_fixed_size_and_only_checked_tags(make_spawner):
    spawner = make_spawner("data", {"storage_gb": 40, "tags": {"team": "vision"}})
    await spawner.load_user_options()
    spawner._pvc_exists = True
    html = await spawner.get_options_form()
    assert 'value="40" readonly required>' in html
    assert ">team=vision</textarea>" in html

    spawner.user_options = {"tags": {"<script>": "{{ 7*7 }}"}}
    html = await spawner.get_options_form()
    assert 'rows="3"></textarea>' in html
    assert html.count("<script>") == 1, "only KubeSpawner's own script tag"


def test_tag_lines_must_have_an_equals_sign():
    with pytest.raises(ValueError, match="tag line 'team' must look like key=value"):
        parse_tag_lines("team\n")


def test_each_instance_type_becomes_a_profile_offering_images_of_its_core_type():
    profiles = build_profile_list(
        [{"slug": "small", "display_name": "Small", "cpu": 2, "memory": "8G", "gpus": 0},
         {"slug": "a100", "display_name": "A100", "cpu": 8, "memory": "64G", "gpus": 2,
          "kubespawner_override": {"node_selector": {"gpu": "a100"}}}],
        {"cpu-python": "nb:py-cpu", "gpu-pytorch": "nb:torch-gpu", "gpu-tensorflow": "nb:tf-gpu"})

    assert profiles == [
        {"slug": "small", "display_name": "Small", "default": True,
         "kubespawner_override": {"cpu_limit": 2.0, "cpu_guarantee": 2.0, "mem_limit": "8G", "mem_guarantee": "8G"},
         "profile_options": {"image": {"display_name": "Image", "choices": {
             "cpu-python": {"display_name": "CPU Python", "kubespawner_override": {"image": "nb:py-cpu"}}}}}},
        {"slug": "a100", "display_name": "A100", "default": False,
         "kubespawner_override": {"cpu_limit": 8.0, "cpu_guarantee": 8.0, "mem_limit": "64G", "mem_guarantee": "64G",
                                  "extra_resource_limits": {"nvidia.com/gpu": "2"},
                                  "node_selector": {"gpu": "a100"}},
         "profile_options": {"image": {"display_name": "Image", "choices": {
             "gpu-pytorch": {"display_name": "GPU PyTorch", "kubespawner_override": {"image": "nb:torch-gpu"}},
             "gpu-tensorflow": {"display_name": "GPU TensorFlow",
                                "kubespawner_override": {"image": "nb:tf-gpu"}}}}}},
    ]


def test_options_are_checked_without_a_spawner():
    profiles = build_profile_list([{"slug": "small", "display_name": "Small", "cpu": 2, "memory": "8G"}],
                                  {"cpu-python": "nb:py"})
    options = notebook_options({"tags": {"team": "vision"}}, profiles, default_storage_gb=30)
    assert (options.profile, options.image, options.storage_capacity, options.tags) == (
        "small", "cpu-python", "30Gi", (("team", "vision"),))
