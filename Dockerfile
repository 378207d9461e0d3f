# Worker image for Dataflow (and the portable runner on Flink or Spark): the Beam SDK harness,
# ffmpeg, and speechmill with its requirements. Build and push:
#   docker build -t REGION-docker.pkg.dev/PROJECT/speechmill/worker:TAG .
#   docker push REGION-docker.pkg.dev/PROJECT/speechmill/worker:TAG
# then run with --sdk_container_image that tag and --sdk_location container (docs/cloud.md).
# The Beam version here must equal the one that submits the job (requirements.txt pins it).
FROM apache/beam_python3.11_sdk:2.77.0

RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ffmpeg \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/speechmill
COPY requirements.txt setup.py ./
# PyPI's torch 2.13.0 wheel carries its CUDA libraries: the same image serves the GPU step (the
# host's NVIDIA driver is installed by Dataflow, install-nvidia-driver) and the CPU steps.
RUN pip install --no-cache-dir "torch==2.13.0" \
 && pip install --no-cache-dir -r requirements.txt "apache-beam[gcp,aws]==2.77.0" \
 && pip install --no-cache-dir --no-deps "resemblyzer==0.1.4"
COPY acquisition acquisition
COPY asr asr
COPY audio audio
COPY corpus corpus
COPY dedup dedup
COPY exports exports
COPY pipelines pipelines
COPY report report
COPY run run
COPY schemas schemas
COPY speakers speakers
COPY storage storage
COPY transforms transforms
COPY tts tts
RUN pip install --no-cache-dir --no-deps .

# The ASR model is baked in so workers never download it: pass --asr_model /opt/models/asr.
# (Build with --build-arg ASR_MODEL=facebook/wav2vec2-large-960h-lv60-self on a machine that can reach the Hub.)
ARG ASR_MODEL=""
RUN if [ -n "$ASR_MODEL" ]; then python -c "import sys; from transformers import AutoModelForCTC, AutoProcessor; \
m=sys.argv[1]; AutoModelForCTC.from_pretrained(m).save_pretrained('/opt/models/asr'); \
AutoProcessor.from_pretrained(m).save_pretrained('/opt/models/asr')" "$ASR_MODEL"; fi
ENV HF_HUB_OFFLINE=1

# The SDK harness stays the entry point (from the base image).
ENTRYPOINT ["/opt/apache/beam/boot"]
