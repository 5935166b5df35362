# Shared steps of the image builds that need no registry and no PyPI inside a container:
# wheels pip-installed on the host into a cached folder, handed to a Dockerfile as
# prepared/site-packages. Sourced (not run) by examples/models/iris/build.sh,
# scripts/build-service-image.sh and scripts/build-images.sh; set LOG_NAME first.

log() { echo "$LOG_NAME: $*" >&2; }
die() { echo "$LOG_NAME: ERROR: $*" >&2; exit 1; }
apt_install() {
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null 2>&1 \
    || { apt-get update -qq >/dev/null 2>&1 \
         && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null 2>&1; }
}
have_image() { docker image inspect "$1" >/dev/null 2>&1; }

# force_flag ARGS...: FORCE=1 for --force, 0 without; anything else is a usage error
force_flag() {
  FORCE=0
  local arg
  for arg in "$@"; do
    [[ $arg == --force ]] || { echo "usage: $0 [--force]" >&2; exit 2; }
    FORCE=1
  done
}

# image_current IMAGE HASH: the image exists and was built from sources with this hash
image_current() {
  have_image "$1" && [[ "$(docker image inspect -f '{{index .Config.Labels "inference.src-hash"}}' "$1")" == "$2" ]]
}

# prepared_site CACHE_DIR RECIPE COMPILE ITEM...: cp311 manylinux wheels pip-installed on the
# host; each ITEM is a requirement ("numpy==2.1.3") or a requirements file. Prints the folder,
# cached under CACHE_DIR by RECIPE and the requirements (a file counts by its content).
# COMPILE=1: drop bin/ and byte-compile here, once (a non-root user in the image cannot write
# .pyc files; unchecked-hash .pyc files do not depend on mtimes; 3.11 matches bookworm's).
prepared_site() {
  local dir=$1 recipe=$2 compile=$3 item site t0
  shift 3
  local -a pip_args=()
  for item in "$@"; do
    if [[ -f $item ]]; then pip_args+=(-r "$item"); else pip_args+=("$item"); fi
  done
  site="$dir/$( { echo "$recipe"; for item in "$@"; do if [[ -f $item ]]; then cat "$item"; else echo "$item"; fi; done; } \
                | sha256sum | cut -c1-12)"
  if [[ ! -f $site/.complete ]]; then
    python3 -m pip --version >/dev/null 2>&1 \
      || { log "installing python3-pip (apt-get)"; apt_install python3-pip || die "no pip for python3"; }
    log "pip install --target $site (cp311 manylinux wheels): ${*##*/}"
    t0=$SECONDS
    rm -rf "$site"
    mkdir -p "$site"
    python3 -m pip install -q --disable-pip-version-check --no-compile --target "$site" \
        --only-binary=:all: --platform manylinux2014_x86_64 --python-version 3.11 --implementation cp \
        "${pip_args[@]}" >"$site.pip.log" 2>&1 \
      || { cat "$site.pip.log" >&2; die "pip install failed"; }
    rm -f "$site.pip.log"
    if [[ $compile == 1 ]]; then
      # (keep the packages' tests/ folders: numpy.testing imports numpy._core.tests)
      rm -rf "${site:?}/bin"
      if python3 -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
        python3 -m compileall -q -j 0 --invalidation-mode unchecked-hash "$site" >/dev/null \
          || die "compileall of $site failed"
      else
        log "warning: host python3 is not 3.11: site-packages left uncompiled (slower start)"
      fi
    fi
    touch "$site/.complete"
    log "cached site-packages $site in $((SECONDS - t0)) s"
  fi
  echo "$site"
}

# build_prepared IMAGE BASE_IMAGE HASH SITE CONTEXT: docker build of CONTEXT with SITE as its
# prepared/site-packages, labelled with HASH; the build's output goes to CONTEXT.log
build_prepared() {
  local image=$1 base=$2 hash=$3 site=$4 ctx=$5
  mkdir -p "$ctx/prepared"
  # hard links are enough for a build context (same file system as the cache)
  cp -al "$site" "$ctx/prepared/site-packages" 2>/dev/null || cp -a "$site" "$ctx/prepared/site-packages"
  rm -f "$ctx/prepared/site-packages/.complete"
  # the classic builder: this Docker engine's client may have no buildx plugin
  DOCKER_BUILDKIT=0 docker build --force-rm --build-arg "BASE_IMAGE=$base" \
      --label "inference.src-hash=$hash" -t "$image" "$ctx" >"$ctx.log" 2>&1 \
    || { tail -n 30 "$ctx.log" >&2; die "docker build $image failed"; }
}
