"""The markdown section of ``bench_peers.py``: the results table and the sentences read from it."""

from __future__ import annotations

import math

from peers import BACKEND_ROWS, HEADING, LABELS, MODES


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f} %"


def _err(r: dict) -> str:
    if not r["applicable"]:
        return "n/a"
    if r["median_rot_deg"] is None:
        return "failed (> half)"
    return f"{r['median_rot_deg']:.2f} deg, {100 * r['median_trans_m']:.1f} cm"


def _num(x: float | None, fmt: str = "{:.0f}") -> str:
    return "n/a" if x is None else fmt.format(x)


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "n/a"
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.1f} min"


def _mapping(r: dict) -> str:
    return "n/a" if r["mapping_s"] is None else f"{_duration(r['mapping_s'])} / {_duration(r['mapping_cpu_s'])}"


def table(rows: list[dict]) -> list[str]:
    lines = ["| method | mode | median error | 5cm/5deg | 10cm/10deg | failures | mapping wall / CPU | "
             "ms/frame median / p95 | map MB | peak MB map / localize | note |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        applicable = r["applicable"]
        lines.append(" | ".join([
            f"| {LABELS.get(r['method'], r['method'])}", r["mode"], _err(r),
            _pct(r["within_5cm_5deg"]) if applicable else "n/a", _pct(r["within_10cm_10deg"]) if applicable else "n/a",
            f"{r['failures']}/{r['frames']}" if applicable else "n/a", _mapping(r),
            f"{r['loc_ms_median']:.0f} / {r['loc_ms_p95']:.0f}" if applicable else "n/a",
            _num(r["map_mb"], "{:.1f}"),
            f"{_num(r['peak_rss_mapping_mb'])} / {_num(r['peak_rss_localize_mb'])}", r["note"]]) + " |")
    return lines


def compare_accuracy(a: dict, b: dict) -> int:
    """1 if row ``a`` is more accurate than row ``b``, -1 if less, 0 if tied: by the share within
    5 cm / 5 deg, then 10 cm / 10 deg, then (when either localizes anything) median translation error."""
    ka, kb = (a["within_5cm_5deg"], a["within_10cm_10deg"]), (b["within_5cm_5deg"], b["within_10cm_10deg"])
    if ka != kb:
        return 1 if ka > kb else -1
    if ka[1] == 0:  # neither is within 10 cm / 10 deg anywhere: how wrong a wrong pose is does not matter
        return 0
    ta, tb = (math.inf if r["median_trans_m"] is None else r["median_trans_m"] for r in (a, b))
    return (ta < tb) - (ta > tb)


def _acc_text(r: dict) -> str:
    med = ("no median (over half failed)" if r["median_trans_m"] is None
           else f"median {100 * r['median_trans_m']:.1f} cm")
    return f"{_pct(r['within_5cm_5deg'])} within 5 cm / 5 deg, {med}"


def verdict(rows: list[dict]) -> list[str]:
    """Plain sentences, generated from the numbers: where sceneloc loses to a peer, and whether its
    default estimator beats the other estimators on its own correspondences."""
    out = []
    usable = [r for r in rows if r["applicable"] and r["frames"]]
    for dataset in dict.fromkeys(r["dataset"] for r in rows):
        for mode in MODES:
            ref = next((r for r in usable if r["dataset"] == dataset and r["mode"] == mode
                        and r["method"] == "sceneloc"), None)
            if ref is None:
                continue
            peers = [r for r in usable if r["dataset"] == dataset and r["mode"] == mode and r["method"] != "sceneloc"]
            where = f"{dataset}, {mode.upper().replace('RGBD', 'RGB-D')}"
            for p in peers:
                name = LABELS.get(p["method"], p["method"])
                numbers = f"{_acc_text(ref)} against {_acc_text(p)}"
                order = compare_accuracy(ref, p)
                if p["method"] in BACKEND_ROWS:
                    if order < 0:
                        out.append(f"* {where}: on sceneloc's own correspondences the default estimator "
                                   f"loses to {name}: {numbers}.")
                    continue
                if order < 0:
                    out.append(f"* {where}: **sceneloc is less accurate than {name}**: {numbers}.")
                elif order > 0:
                    out.append(f"* {where}: sceneloc is more accurate than {name}: {numbers}.")
                elif ref["within_10cm_10deg"] == 0:
                    out.append(f"* {where}: neither sceneloc nor {name} localizes any frame within 10 cm / 10 deg.")
                else:
                    out.append(f"* {where}: sceneloc and {name} are equally accurate: {numbers}.")
                if p["loc_ms_median"] < ref["loc_ms_median"]:
                    out.append(f"* {where}: sceneloc is slower per frame than {name}: "
                               f"{ref['loc_ms_median']:.0f} against {p['loc_ms_median']:.0f} ms median.")
        ref = next((r for r in rows if r["dataset"] == dataset and r["method"] == "sceneloc"), None)
        if ref is None:
            continue
        for method in dict.fromkeys(r["method"] for r in rows
                                    if r["dataset"] == dataset and r["method"] not in BACKEND_ROWS):
            p = next(r for r in rows if r["dataset"] == dataset and r["method"] == method)
            name = LABELS.get(method, method)
            for key, what, fmt in (("mapping_s", "takes longer to map", _duration),
                                   ("map_mb", "has a larger map", lambda v: f"{v:.1f} MB"),
                                   ("peak_rss_localize_mb", "needs more memory to localize", lambda v: f"{v:.0f} MB")):
                if ref[key] is not None and p[key] is not None and p[key] < ref[key]:
                    out.append(f"* {dataset}: sceneloc {what} than {name}: {fmt(ref[key])} against {fmt(p[key])}.")
    return out


def render(results: dict) -> str:
    m = results["machine"]
    v = m["versions"]
    env = ", ".join(f"{k}={val}" for k, val in m["thread_env"].items() if val) or "no thread variables set"
    lines = [HEADING, "",
             f"Command: `{results['command']}`  ",
             f"Date: {results['date']}; {results['seconds'] / 60:.1f} min in all.  ",
             f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gb']} GB, GPU: {m['gpu']}; {m['platform']}; "
             f"Python {v.get('python')}, torch {v.get('torch')} ({m['torch_threads']} threads), "
             f"OpenCV {v.get('opencv')}, numpy {v.get('numpy')}, poselib {v.get('poselib', 'not installed')}; "
             f"{env}.", ""]
    if results["quick"]:
        lines += ["**--quick smoke run**: tiny data and seconds-scale budgets; "
                  "the numbers say nothing about the methods.", ""]
    lines += ["Budgets (training minutes): " + "; ".join(
              f"{label}: sceneloc {b['minutes']:g} stage 1 + {b['confidence_minutes']:g} stage 2, "
              f"PoseNet {b['posenet_minutes']:g}"
              for label, b in ((label, info["budget"]) for label, info in results["datasets"].items())) +
              f"; the feature map is one pass over the training images. Times per frame are the localize call on "
              f"a decoded image (the sceneloc rows include the network and its confidence PointNet). Map MB: the "
              f"files localization reads. Peak MB: peak resident memory of the process that mapped / localized, "
              f"including the interpreter and libraries: an idle process with numpy, OpenCV, torch and sceneloc "
              f"loaded takes {_num(m['baseline_peak_rss_mb'])} MB. Failures count as infinite errors.", ""]
    for label, info in results["datasets"].items():
        rows = [r for r in results["rows"] if r["dataset"] == label]
        lines += [f"**{label}** ({info['train']} training / {info['test']} test frames, `{info['path']}`):", "",
                  *table(rows), ""]
    sentences = verdict(results["rows"])
    if sentences:
        lines += ["Reading (generated from the numbers above):", "", *sentences, ""]
    return "\n".join(lines)
