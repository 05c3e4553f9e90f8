#!/usr/bin/env bash
# The converter job: build the TensorRT FP16 engine into the shared model repository, once.
#
# The build is skipped when the repository already holds a plan built from the same checkpoint,
# taxonomy, settings, TensorRT version and GPU model (recorded in <repository>/.skinbatch-build);
# anything else rebuilds with --force. A plan is only valid for the TensorRT and GPU that built it.
#
# Exit codes: 0 done or up to date, 2 inputs missing, 14 no GPU or no TensorRT (docs/contracts.md); any
# other is `skinbatch convert`'s own, from the same table (1 when the conversion fails its checks).
set -euo pipefail

checkpoint=${CHECKPOINT:-/models/checkpoint.pt}
taxonomy=${TAXONOMY:-/models/taxonomy.json}
repository=${REPOSITORY:-/model_repository}
version=${MODEL_VERSION:-1}
stamp_file="$repository/.skinbatch-build"

for input in "$checkpoint" "$taxonomy"; do
  if [[ ! -f "$input" ]]; then
    echo "error: $input not found. Put the fine-tuned checkpoint and the taxonomy it was trained on in" \
         "MODEL_INPUT_DIR (compose/.env) as CHECKPOINT and TAXONOMY." >&2
    exit 2
  fi
done

if ! gpu=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -n 1) || [[ -z "$gpu" ]]; then
  echo "error: no NVIDIA GPU visible in the converter container. Install the NVIDIA Container Toolkit" \
       "on the host; the engine must be built on the GPU model that will serve it." >&2
  exit 14  # ENVIRONMENT (docs/contracts.md)
fi
if ! trt=$(python3 -c 'import tensorrt; print(tensorrt.__version__)' 2>/dev/null); then
  echo "error: the TensorRT Python package is missing from this image (build it from compose/Dockerfile.converter)." >&2
  exit 14  # ENVIRONMENT (docs/contracts.md)
fi

stamp="ngc=${NGC_RELEASE:-unknown} tensorrt=$trt gpu=$gpu version=$version"
stamp+=" max_batch=${MAX_BATCH_SIZE:-32} preferred=${PREFERRED_BATCH_SIZES:-} delay_us=${MAX_QUEUE_DELAY_US:-2000}"
stamp+=" instances=${TRITON_INSTANCES:-1}"
stamp+=" checkpoint=$(sha256sum "$checkpoint" | cut -d' ' -f1) taxonomy=$(sha256sum "$taxonomy" | cut -d' ' -f1)"

if [[ -f "$stamp_file" && "$(cat "$stamp_file")" == "$stamp" && -f "$repository/inception_v3/$version/model.plan" ]]; then
  echo "model repository is up to date (version $version, TensorRT $trt on $gpu); nothing to build"
  exit 0
fi

echo "building the TensorRT engine: version $version, TensorRT $trt, $gpu"
args=(
  convert
  --checkpoint "$checkpoint"
  --taxonomy "$taxonomy"
  --target tensorrt
  --repository "$repository"
  --model-version "$version"
  --max-batch-size "${MAX_BATCH_SIZE:-32}"
  --max-queue-delay-us "${MAX_QUEUE_DELAY_US:-2000}"
  --instances "${TRITON_INSTANCES:-1}"
  --timing-cache "$repository/.tensorrt-timing-cache-$trt"
  --force
)
if [[ -n "${PREFERRED_BATCH_SIZES:-}" ]]; then
  args+=(--preferred-batch-sizes "$PREFERRED_BATCH_SIZES")
fi
rm -f "$stamp_file"
skinbatch "${args[@]}" "$@"
printf '%s\n' "$stamp" > "$stamp_file"
