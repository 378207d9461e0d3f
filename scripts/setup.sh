#!/usr/bin/env bash
# Set up everything speechmill needs on a fresh Debian/Ubuntu machine (idempotent):
# ffmpeg and espeak-ng from apt when missing, a virtualenv in .venv, torch 2.13.0, the requirements,
# and the project itself (editable) so Beam worker processes can import it from anywhere.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v ffmpeg >/dev/null 2>&1 || missing+=(ffmpeg)
command -v espeak-ng >/dev/null 2>&1 || missing+=(espeak-ng)
# the report page's test drives Debian's chromium through its chromedriver (browsers are not downloaded)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
[ -x /usr/bin/chromedriver ] || missing+=(chromium-driver)
# real LibriVox speech with reference transcripts (public domain): the demo's input and the Whisper tests
[ -f /usr/share/pocketsphinx/test/data/librivox/transcription ] || missing+=(pocketsphinx-testdata)
# real sung vocals over a band (CC-BY-SA-3.0 metal songs): singing must not pass as speech
[ -d /usr/share/games/fretsonfire/data/songs/muldjord ] || missing+=(fretsonfire-songs-muldjord)
# Chromaprint, for the acoustic fingerprints of duplicate audio (pyacoustid loads libchromaprint.so.1)
ldconfig -p 2>/dev/null | grep -q 'libchromaprint.so.1 ' || missing+=(libchromaprint1)
command -v fpcalc >/dev/null 2>&1 || missing+=(libchromaprint-tools)
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ] && ! "$PY" -c "import ensurepip, venv" >/dev/null 2>&1; then
  missing+=(python3-venv)  # Debian splits venv/ensurepip out of python3
fi
if [ ${#missing[@]} -gt 0 ]; then
  echo "[setup] installing ${missing[*]} with apt-get"
  if [ "$(id -u)" = 0 ]; then SUDO=""; elif command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else SUDO="none"; fi
  if [ "$SUDO" = none ]; then
    echo "[setup] warning: cannot apt-get install ${missing[*]} (not root, no sudo)." >&2
    echo "[setup] ffmpeg falls back to the imageio-ffmpeg binary; the demo and tests need espeak-ng." >&2
  else
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
fi

if [ ! -x .venv/bin/python ]; then
  echo "[setup] creating .venv"
  "$PY" -m venv .venv
fi
. .venv/bin/activate
python -m pip install -q --upgrade pip setuptools wheel
# torch first and pinned: on a CPU machine this is the CPU build; a looser pin would pull CUDA wheels.
python -m pip install -q "torch==2.13.0"
python -m pip install -q -r requirements-dev.txt
# the speaker encoder's weights ship in resemblyzer's wheel; only the weights are read, so its
# webrtcvad dependency (a C extension) is not needed
python -m pip install -q --no-deps "resemblyzer==0.1.4"
# (setuptools' notice that an editable install reads this folder is left out: that is the point of it)
PYTHONWARNINGS="ignore:Editable installation" python -m pip install -q --no-deps --no-build-isolation -e .
echo "[setup] ready: . .venv/bin/activate"
