# Sourced by scripts/build_image.sh and tests/deploy/container_test.sh: how to run podman here.
#
# podman's defaults work on a normal host. This project's sandbox (a VM where root lacks
# CAP_SYS_RESOURCE, cgroups are a v1/v2 hybrid and there is no iptables) needs three changes,
# found by trying (docs/deploying.md "Where containers run"):
#   - runc instead of crun: crun 1.8 refuses "cgroups in hybrid mode";
#   - rlimits no higher than podman's own (nofile = the hard limit here, nproc 4096): podman asks
#     for nofile 1048576 by default and runc's setrlimit then fails with EPERM;
#   - --network=host: the bridge network's netavark needs iptables, absent here.
# container_env_check IMAGE tries a plain `podman run`; only when it fails does it write
# .cache/containers/containers.conf (runtime = runc), export CONTAINERS_CONF and fill
# CONTAINER_BUILD_FLAGS / CONTAINER_RUN_FLAGS. Either way those arrays are what callers pass
# (host networking is always used for runs: tests reach the daemon on 127.0.0.1).

CONTAINER_ENGINE="${CONTAINER_ENGINE:-podman}"
CONTAINER_BUILD_FLAGS=(--network=host)
CONTAINER_RUN_FLAGS=(--network=host)
CONTAINER_ENV_ERROR=""

container_env_check() {
  local image="$1" out
  [[ "$CONTAINER_ENGINE" == podman ]] || return 0
  if out="$(podman run --rm --network=host --entrypoint /bin/true "$image" 2>&1)"; then return 0; fi
  local root="${LIGHTSERVE_SOURCE_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}"
  local first nofile
  first="$(echo "$out" | tail -1)"
  nofile="$(ulimit -Hn)"
  [[ "$nofile" == unlimited || "$nofile" -gt 65536 ]] && nofile=65536
  mkdir -p "$root/.cache/containers"
  cat > "$root/.cache/containers/containers.conf" <<CONF
# Written by scripts/container_env.sh: podman's defaults failed here with:
#   $first
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
CONF
  export CONTAINERS_CONF="$root/.cache/containers/containers.conf"
  local limits=(--ulimit "nofile=$nofile:$nofile" --ulimit "nproc=4096:4096")
  CONTAINER_BUILD_FLAGS=(--network=host --runtime runc "${limits[@]}")
  CONTAINER_RUN_FLAGS=(--network=host --runtime runc "${limits[@]}")
  if ! out="$(podman run --rm "${CONTAINER_RUN_FLAGS[@]}" --entrypoint /bin/true "$image" 2>&1)"; then
    CONTAINER_ENV_ERROR="podman cannot run a container here, even with runc, lower rlimits and host networking: $(echo "$out" | tail -1)"
    echo "[container_env] $CONTAINER_ENV_ERROR" >&2
    return 1
  fi
  echo "[container_env] podman's defaults fail here ($first); using runc, nofile=$nofile, nproc=4096, host network" >&2
}
