"""Name the container of a media file from its first bytes, so ffmpeg never guesses.

Left to probe, ffmpeg will happily read a downloaded "episode" that is really an HLS or concat
playlist and fetch whatever it lists (``file:///etc/passwd`` included). speechmill therefore tells
ffmpeg the demuxer to use, chosen here from the file's signature, and only from this whitelist of
plain audio/video containers. Anything else (playlists, HTML, text, images) is refused before
ffmpeg starts.
"""
from __future__ import annotations

from typing import Optional

# demuxer names as ffmpeg knows them
ACCEPTED = ("wav", "w64", "flac", "mp3", "aac", "ogg", "mov", "matroska", "aiff", "au", "amr", "caf", "asf",
            "flv", "mpegts", "mpeg", "ac3", "eac3", "wv", "ape", "avi", "dts")
HEAD_BYTES = 4096

_W64_GUID = bytes.fromhex("726966662e91cf11a5d628db04c10000")
_ASF_GUID = bytes.fromhex("3026b2758e66cf11a6d900aa0062ce6c")


def _id3_skip(head: bytes) -> int:
    """Bytes taken by a leading ID3v2 tag (its size is four 7-bit bytes)."""
    if len(head) < 10 or head[:3] != b"ID3":
        return 0
    size = 0
    for b in head[6:10]:
        size = (size << 7) | (b & 0x7F)
    return 10 + size + (10 if head[5] & 0x10 else 0)


def _mpeg_audio(head: bytes) -> Optional[str]:
    """mp3 (MPEG-1/2 layer I–III) or aac (ADTS) from a frame sync at the start."""
    if len(head) < 4 or head[0] != 0xFF or (head[1] & 0xE0) != 0xE0:
        return None
    layer = (head[1] >> 1) & 0x3
    if (head[1] & 0xF6) == 0xF0:  # 12-bit sync, layer 00: ADTS
        return "aac"
    version = (head[1] >> 3) & 0x3
    bitrate = head[2] >> 4
    rate = (head[2] >> 2) & 0x3
    if layer != 0 and version != 1 and bitrate != 0xF and rate != 0x3:
        return "mp3"
    return None


_MP3_KBPS = {  # (version is MPEG-1, layer) -> bitrate index table
    (True, 3): (0, 32, 64, 96, 128, 160, 192, 224, 256, 288, 320, 352, 384, 416, 448),
    (True, 2): (0, 32, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384),
    (True, 1): (0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320),
    (False, 3): (0, 32, 48, 56, 64, 80, 96, 112, 128, 144, 160, 176, 192, 224, 256),
    (False, 2): (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
    (False, 1): (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
}
_MP3_RATES = {3: (44100, 48000, 32000), 2: (22050, 24000, 16000), 0: (11025, 12000, 8000)}


def _mp3_frame_len(h: bytes) -> int:
    """Length of the MPEG audio frame whose header is ``h[:4]`` (0 when it is not one)."""
    if _mpeg_audio(h) != "mp3":
        return 0
    version, layer = (h[1] >> 3) & 0x3, (h[1] >> 1) & 0x3  # layer bits: 3 = I, 2 = II, 1 = III
    kbps = _MP3_KBPS[(version == 3, {3: 3, 2: 2, 1: 1}[layer] if version == 3 else (3 if layer == 3 else 2))]
    rate = _MP3_RATES[version][(h[2] >> 2) & 0x3]
    bitrate = kbps[h[2] >> 4] * 1000
    pad = (h[2] >> 1) & 1
    if not bitrate:
        return 0
    if layer == 3:
        return (12 * bitrate // rate + pad) * 4
    per = 144 if version == 3 or layer == 2 else 72
    return per * bitrate // rate + pad


def _mp3_after_junk(h: bytes) -> bool:
    """Three MPEG audio frames in a row somewhere in the head (files with leading junk or padding)."""
    for i in range(0, min(len(h), 2048)):
        n = _mp3_frame_len(h[i:i + 4])
        if n and _mp3_frame_len(h[i + n:i + n + 4]):
            m = _mp3_frame_len(h[i + n:i + n + 4])
            if _mp3_frame_len(h[i + n + m:i + n + m + 4]):
                return True
    return False


def _mpegts(head: bytes) -> bool:
    return len(head) >= 188 * 3 and all(head[i] == 0x47 for i in (0, 188, 376))


def container_of(head: bytes, total_size: Optional[int] = None) -> Optional[str]:
    """The ffmpeg demuxer for a file starting with ``head``, or None when it is not one we accept."""
    h = head
    if len(h) < 4:
        return None
    if h[:4] == b"RIFF" and len(h) >= 12:
        if h[8:12] == b"WAVE":
            return "wav"
        if h[8:12] == b"AVI ":
            return "avi"
        return None
    if h[:4] == b"RF64" and h[8:12] == b"WAVE":
        return "wav"
    if h[:16] == _W64_GUID:
        return "w64"
    if h[:4] == b"fLaC":
        return "flac"
    if h[:4] == b"OggS":
        return "ogg"
    if h[4:8] == b"ftyp" or h[4:8] in (b"moov", b"mdat", b"wide", b"free", b"skip"):
        return "mov"
    if h[:4] == b"\x1a\x45\xdf\xa3":
        return "matroska"
    if h[:4] == b"FORM" and h[8:12] in (b"AIFF", b"AIFC"):
        return "aiff"
    if h[:4] == b".snd":
        return "au"
    if h[:5] == b"#!AMR":
        return "amr"
    if h[:4] == b"caff":
        return "caf"
    if h[:16] == _ASF_GUID:
        return "asf"
    if h[:3] == b"FLV":
        return "flv"
    if h[:4] == b"wvpk":
        return "wv"
    if h[:4] == b"MAC ":
        return "ape"
    if h[:4] == b"\x00\x00\x01\xba":
        return "mpeg"
    if h[:4] == b"\x7f\xfe\x80\x01":
        return "dts"
    if _mpegts(h):
        return "mpegts"
    if h[:2] == b"\x0b\x77":
        return "eac3" if len(h) > 5 and (h[5] >> 3) > 10 else "ac3"
    skip = _id3_skip(h)
    if skip:
        rest = h[skip:skip + 4]
        if len(rest) < 4:  # a tag larger than the head: the frame follows it
            return "mp3"
        return _mpeg_audio(rest) or ("flac" if rest == b"fLaC" else None)
    return _mpeg_audio(h) or ("mp3" if _mp3_after_junk(h) else None)


def describe(head: bytes) -> str:
    """A short, printable hint of what a refused file looks like instead."""
    text = head[:256].lstrip()
    low = text.lower()
    if low.startswith(b"#extm3u"):
        return "an HLS playlist (.m3u8), not media"
    if low.startswith(b"ffconcat") or b"\nfile " in low[:200] or low.startswith(b"file "):
        return "an ffmpeg concat list, not media"
    if low.startswith((b"<!doctype html", b"<html")) or b"<html" in low[:200]:
        return "an HTML page, not media"
    if low.startswith((b"<?xml", b"<rss", b"<feed")):
        return "an XML document, not media"
    if low.startswith((b"[playlist]", b"#extinf")) or low.startswith(b"<mpd") or b"<mpd" in low[:200]:
        return "a playlist or stream manifest, not media"
    if not head:
        return "empty"
    printable = sum(32 <= b < 127 or b in (9, 10, 13) for b in head[:256]) / max(1, len(head[:256]))
    if printable > 0.95:
        return "a text file, not media"
    sig = head[:8].hex(" ")
    return f"not a known audio or video container (first bytes {sig})"
