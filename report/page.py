"""The HTML of ``report.html``: one self-contained page (styles inline, plots as data URIs).

Rendered with Jinja2 with autoescaping on: titles, transcripts and reasons come from the internet
and from models, and must never become markup. The page runs no script.
"""
from __future__ import annotations

import jinja2

TEMPLATE = r"""{% macro clip(c) %}<div class="clip" data-key="{{ c.key }}">
<div class="key">{{ c.key }}</div>
{% if c.audio %}<audio controls preload="metadata" src="{{ c.audio }}"></audio>{% else %}
<div class="noaudio">audio not available: {{ c.audio_note }}</div>{% endif %}
{% if c.reason %}<div><span class="reason">{{ c.reason }}</span> <span class="small">{{ c.detail }}</span></div>{% endif %}
<div class="transcript">
{%- for w, conf, low in c.words %}
  {%- if low %}<mark class="low" title="confidence {{ "%.2f"|format(conf) }}">{{ w }}</mark>
  {%- elif conf is not none %}<span title="confidence {{ "%.2f"|format(conf) }}">{{ w }}</span>
  {%- else %}{{ w }}{% endif %}{{ " " if not loop.last }}
{%- else %}<span class="muted">(no transcript)</span>
{%- endfor %}</div>
<table class="scores">{% for name, value in c.scores %}
<tr><td class="muted">{{ name }}</td><td>{{ value }}</td></tr>{% endfor %}</table>
<div class="small">{% if c.link %}<a href="{{ c.link }}">{{ c.title }}</a>{% else %}{{ c.title }}{% endif %}
{% if c.start_s is not none %} at {{ "%.2f"|format(c.start_s) }}–{{ "%.2f"|format(c.end_s) }} s{% endif %}
{% if c.speaker %}· speaker {{ c.speaker }}{% endif %}</div>
</div>{% endmacro -%}
<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="data:,">
<title>speechmill corpus report: {{ root }}</title>
<style>
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0 auto; max-width: 1200px;
       padding: 0 1.2em 4em; color: #222; }
h1 { font-size: 1.5em; margin: 1em 0 0.2em; } h2 { margin-top: 2em; border-bottom: 1px solid #ddd; }
nav a { margin-right: 1em; } .muted { color: #777; } .small { font-size: 12px; }
.cards { display: flex; flex-wrap: wrap; gap: 0.6em; margin: 1em 0; }
.card { border: 1px solid #ddd; border-radius: 6px; padding: 0.5em 0.9em; min-width: 8em; }
.card b { display: block; font-size: 1.3em; }
table { border-collapse: collapse; margin: 0.6em 0; } th, td { padding: 0.2em 0.6em; border-bottom: 1px solid #eee;
        text-align: left; vertical-align: top; } td.n, th.n { text-align: right; font-variant-numeric: tabular-nums; }
.plots { display: flex; flex-wrap: wrap; gap: 0.8em; } .plots figure { margin: 0; }
.plots img { width: 400px; height: auto; } img.wide { width: 640px; height: auto; }
.empty { width: 400px; border: 1px dashed #ccc; padding: 1em; box-sizing: border-box; }
.clips { display: grid; grid-template-columns: repeat(auto-fill, minmax(360px, 1fr)); gap: 0.8em; }
.clip { border: 1px solid #ddd; border-radius: 6px; padding: 0.6em 0.8em; }
.clip audio { width: 100%; margin: 0.3em 0; } .clip .key { font-family: monospace; font-size: 12px; word-break: break-all; }
.transcript { margin: 0.4em 0; overflow-wrap: anywhere; } mark.low { background: #ffd7a8; }
.scores { font-size: 12px; } .scores td { padding: 0 0.5em 0 0; border: 0; }
.reason { font-weight: 600; color: #a14e0f; } .noaudio { color: #a14e0f; font-style: italic; }
</style>
</head>
<body>
<h1>Corpus report</h1>
<div class="muted">{{ root }} · {{ runs_committed }} committed runs{% if last_published %}, last published
{{ last_published }}{% endif %}</div>
<nav class="small"><a href="#funnel">Funnel</a><a href="#rejects">Rejects</a><a href="#distributions">Distributions</a>
<a href="#speakers">Speakers</a><a href="#sources">Sources</a><a href="#runs">Throughput</a><a href="#audit">Audit</a></nav>

<div class="cards">
{% for label, value in cards %}<div class="card"><span class="muted small">{{ label }}</span><b>{{ value }}</b></div>
{% endfor %}</div>

<h2 id="funnel">Funnel</h2>
{% if funnel_plot %}<img class="wide" src="{{ funnel_plot }}" alt="hours left after each step">{% endif %}
<table>
<tr><th>step</th><th class="n">sources</th><th class="n">clips</th><th class="n">hours</th><th class="n">% of decoded</th>
<th>removed here</th><th class="n">hours removed</th></tr>
{% for s in funnel %}<tr><td>{{ s.label }}</td><td class="n">{{ fmt_int(s.sources) }}</td><td class="n">{{ fmt_int(s.clips) }}</td>
<td class="n">{{ fmt_hours(s.hours) }}</td><td class="n">{{ share(s.hours) }}</td><td>{{ s.removed }}</td>
<td class="n">{{ fmt_hours(s.removed_hours) if s.removed else "" }}</td></tr>
{% endfor %}</table>

<h2 id="rejects">Rejects by stage and reason</h2>
{% if rejects %}<table>
<tr><th>stage</th><th>reason</th><th>what</th><th class="n">count</th><th class="n">hours</th><th>example</th></tr>
{% for g in rejects %}<tr><td>{{ g.stage }}</td><td>{% if g.level == "clip" %}<a href="#audit-{{ g.stage }}-{{ g.reason }}">{{ g.reason }}</a>{% else %}{{ g.reason }}{% endif %}</td>
<td>{{ g.level }}s</td><td class="n">{{ "{:,}".format(g.count) }}</td><td class="n">{{ fmt_hours(g.hours) }}</td>
<td class="small">{{ g.example }}</td></tr>
{% endfor %}</table>{% else %}<p>Nothing was rejected.</p>{% endif %}

<h2 id="distributions">Distributions</h2>
<p class="small muted">Kept clips in blue; rejected clips (where the score was measured) in orange.</p>
<div class="plots">
{% for title, uri in distributions %}<figure>{% if uri %}<img src="{{ uri }}" alt="{{ title }}">{% else %}
<div class="empty">{{ title }}: not measured in this corpus</div>{% endif %}</figure>
{% endfor %}</div>

<h2 id="speakers">Speakers</h2>
<p>{{ "{:,}".format(n_speakers) }} speakers in {{ "{:,}".format(n_kept_sources) }} sources with kept clips.</p>
<div class="plots">
{% for title, uri in speaker_plots %}<figure>{% if uri %}<img src="{{ uri }}" alt="{{ title }}">{% else %}
<div class="empty">{{ title }}: no kept clips yet</div>{% endif %}</figure>
{% endfor %}</div>

<h2 id="sources">Sources</h2>
{% if sources_hidden %}<p class="muted small">The {{ sources|length }} sources with the most audio of {{ "{:,}".format(sources|length + sources_hidden) }};
every source is in sources/*.parquet.</p>{% endif %}
<table>
<tr><th>title</th><th>status</th><th class="n">hours in</th><th class="n">hours kept</th><th class="n">clips</th>
<th class="n">speakers</th><th class="n">rejected clips</th></tr>
{% for s in sources %}<tr><td>{% if s.link %}<a href="{{ s.link }}">{{ s.title }}</a>{% else %}{{ s.title }}{% endif %}
<div class="muted small">{{ s.source_id }}</div></td><td>{{ s.status }}{% if s.reason %}: {{ s.reason }}{% endif %}</td>
<td class="n">{{ fmt_hours(s.hours_in) }}</td><td class="n">{{ fmt_hours(s.hours_kept) }}</td><td class="n">{{ "{:,}".format(s.clips) }}</td>
<td class="n">{{ s.speakers }}</td><td class="n">{{ "{:,}".format(s.rejected_clips) }}</td></tr>
{% endfor %}</table>

<h2 id="runs">Throughput</h2>
{% if runs %}<p>{{ fmt_hours(total_hours_in) }} h of audio in {{ "%.1f"|format(total_elapsed_s) }} s of run time
({{ speed(total_realtime) }}); ASR input that was padding, over all runs: {{ pct(mean_padding) }}.</p>
{% if runs_hidden %}<p class="muted small">The newest {{ runs|length }} of {{ runs|length + runs_hidden }} runs.</p>{% endif %}
<table>
<tr><th>run</th><th>wave</th><th>published</th><th class="n">hours in</th><th class="n">seconds</th><th class="n">× realtime</th>
<th class="n">ASR padding</th><th class="n">clips kept</th><th>ASR model</th></tr>
{% for r in runs %}<tr><td class="small">{{ r.run }}</td><td>{{ r.wave }}</td><td class="small">{{ r.published_at }}</td>
<td class="n">{{ fmt_hours(r.hours_in) }}</td><td class="n">{{ "%.1f"|format(r.elapsed_s) }}</td><td class="n">{{ speed(r.realtime) }}</td>
<td class="n">{{ pct(r.asr_padding) }}</td><td class="n">{{ "{:,}".format(r.kept) }}</td><td class="small">{{ r.asr_model }}</td></tr>
{% endfor %}</table>{% else %}<p>No build run recorded its timing.</p>{% endif %}

<h2 id="audit">Audit: listen to clips</h2>
<p class="small muted">A random sample (seed {{ seed }}), the same every time this corpus is reported on.
Words the model was less than {{ low_word_confidence }} sure of are <mark class="low">marked</mark>.</p>
<h3>Kept clips</h3>
{% if kept %}<div class="clips">{% for c in kept %}{{ clip(c) }}{% endfor %}</div>{% else %}<p>No clips kept yet.</p>{% endif %}
{% for (stage, reason), clips in rejected %}
<h3 id="audit-{{ stage }}-{{ reason }}">Rejected: {{ stage }}/{{ reason }}</h3>
<div class="clips">{% for c in clips %}{{ clip(c) }}{% endfor %}</div>
{% endfor %}

</body>
</html>
"""


def _fmt_int(v) -> str:
    return "" if v is None else f"{v:,}"


def _fmt_hours(h) -> str:
    if h is None:
        return ""
    return f"{h:,.1f}" if abs(h) >= 100 else f"{h:.3g}" if h else "0"


def _pct(x) -> str:
    return "–" if x is None else f"{100 * x:.1f}%"


def _speed(x) -> str:
    return "–" if x is None else f"{x:,.0f}×" if x >= 10 else f"{x:.2f}×"


_ENV = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=False)
_ENV.globals.update(fmt_int=_fmt_int, fmt_hours=_fmt_hours, pct=_pct, speed=_speed)
_PAGE = _ENV.from_string(TEMPLATE)


def render(context: dict) -> str:
    decoded = context.get("decoded_hours") or 0.0
    share = (lambda h: "" if h is None or not decoded else f"{100 * h / decoded:.1f}%")
    return _PAGE.render(share=share, **context)
