"""What does the compiler say the k-NN search costs on a TPU (or an H100) this machine lacks?

A roofline table from deviceless (ahead-of-time) compilation (fpjax.aot): COMPILER ESTIMATES,
NOT MEASUREMENTS. Nothing here runs on a TPU or a GPU; the programs are compiled for their
topology by libtpu (TPU) or the CUDA PJRT plugin (H100) on this CPU machine.

For each production shape (bank rows x D, queries; k = 1, bfloat16 full-space search) and each
TPU slice (v5e-8, v6e-8: the bank sharded over the 8 chips, every number per chip):
1. the fused Pallas kernel's flops and HBM bytes from its `pl.CostEstimate`
   (`pallas_fused.cost` at the chip's bank slice and the autotuner's first TPU Pallas
   candidate's block_q), checked against a count by hand here, and its arithmetic intensity
   against the chip's ridge point (peak bf16 flop/s over HBM bytes/s);
2. XLA's cost model (`compiled.cost_analysis()`) for the XLA-scan program
   (`scan.search_program`, `Config('xla', 2048)`). XLA's cost analysis counts a while
   loop's body once, so the scan over bank tiles shows up as one tile step; the table scales
   it: flops and bytes = whole program + (steps - 1) x one step (one step compiled on its own
   from `scan.scan_tiles` over a one-tile slice), XLA's time = steps x one step's time
   (the loop alone). Also printed: one step's bytes by operand, and its top-c merge alone;
3. the same for a bare bf16 matmul + `lax.top_k(k=1)` per chip (queries x bank slice, f32
   accumulation, the 8 per-chip winners merged);
4. the chip's bf16-peak time for 2·q·rows·D flops;
5. compiled memory per chip (`aot.bytes_per_chip`) of the XLA-scan and the Pallas programs
   against the chip's HBM. Where the first Pallas candidate does not compile (VMEM), the next
   ones in the autotuner's order are tried, as the autotuner would, and the failures listed.
For the H100 (Triton kernel), one line per shape: the Pallas program's compiled memory and the
kernel's cost-estimate intensity against the H100's ridge; a GPU compiled without a device
gives no cost analysis.

Times: XLA's own 'optimal_seconds' where it gives a positive one, else (and always beside it)
max(flops / peak, bytes / bandwidth) from XLA's flops and bytes.

  JAX_PLATFORMS=cpu TPU_SKIP_MDS_QUERY=1 ALLOW_MULTIPLE_LIBTPU_LOAD=1 python benchmarks/aot.py
  python benchmarks/aot.py --targets=v5e-8 --shapes=784:1000000:32768     # one line
Needs libtpu and jax-cuda12-pjrt/-plugin at the installed JAX's version (tests/aot/run.sh).
"""
import os

# Before JAX starts: the plugins only compile here, they must not be opened as devices.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TPU_SKIP_MDS_QUERY", "1")
os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")

import contextlib  # pylint: disable=g-import-not-at-top,wrong-import-position
import datetime
import json
import platform
import re
import time

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
from jax import lax
from jax.sharding import NamedSharding, PartitionSpec as P

from fpjax import aot
from fpjax.knn import autotune
from fpjax.knn import scan
from fpjax.knn import pallas_fused
from fpjax import parallel

_TARGETS = flags.DEFINE_list("targets", ["v5e-8", "v6e-8", "h100"],
                             "fpjax.aot targets (TPU slices and/or 'h100')")
_SHAPES = flags.DEFINE_list("shapes", ["784:1000000:32768", "3072:500000:8192"],
                            "dim:bank:queries triples")

TILE = 2048  # Manifold's default bank tile, the XLA scan's step
K = 1
NOTE = ("compiler estimates from deviceless compilation (XLA's cost model, the kernel's "
        "pl.CostEstimate, memory_analysis), not measurements: nothing ran on a TPU or GPU")


def slice_rows(bank_rows, shards, tile=TILE):
  """Rows of one chip's bank slice, as BankPlacement pads them (a multiple of the tile)."""
  per_shard = -(-bank_rows // shards)
  return -(-per_shard // tile) * tile


def sds(mesh, shape, spec, dtype=jnp.float32):
  return jax.ShapeDtypeStruct(shape, dtype, sharding=NamedSharding(mesh, spec))


def search_args(mesh, queries, rows, dim):
  """search_program's arguments (resident bank, full-space search): `rows` per chip."""
  nb = mesh.shape[parallel.BANK]
  return (sds(mesh, (queries, dim), P(parallel.DATA, None)),
          sds(mesh, (rows * nb, dim), P(parallel.BANK, None)),
          sds(mesh, (dim,), P()), sds(mesh, (), P(), jnp.int32), sds(mesh, (), P(), jnp.int32))


def costs(compiled):
  """compiled.cost_analysis() as one dict (a list of dicts in some JAX versions)."""
  ca = compiled.cost_analysis()
  if isinstance(ca, (list, tuple)):
    ca = ca[0] if ca else {}
  return dict(ca or {})


def time_key(ca):
  """The cost analysis's time-like key, if any ('optimal_seconds' from libtpu)."""
  keys = [k for k in ca if "second" in k.lower() or k.lower().endswith("time")]
  return keys[0] if keys else None


def summarize(ca, t):
  """flops, bytes and times of a cost analysis (one program or scaled), per chip."""
  flops, nbytes = float(ca.get("flops", 0.0)), float(ca.get("bytes accessed", 0.0))
  key = time_key(ca)
  model = float(ca[key]) if key is not None else None
  roofline = max(flops / t.peak_bf16_flops, nbytes / t.bandwidth)
  return dict(flops=flops, bytes=nbytes, model_seconds=model if model and model > 0 else None,
              model_seconds_raw=model, time_key=key, roofline_seconds=roofline,
              bound="compute" if flops / t.peak_bf16_flops >= nbytes / t.bandwidth else "memory")


def hand_cost(n_q, rows, dim, *, c, block_q, itemsize):
  """The fused kernel's flops and HBM bytes, counted here from its grid and blocks (not from
  pallas_fused.cost): the grid is (query blocks, bank blocks), bank axis innermost.
  - flops: one [block_q, D] x [D, rows] product per query block, 2 flops a multiply-add;
  - the query block's index does not change along the bank axis: each query read once;
  - the bank slice and its float32 norms are streamed once per query block;
  - the candidate lists (float32 minima + int32 group ids, c padded to a power of two >= 16)
    written once."""
  padded_q = block_q * ((n_q + block_q - 1) // block_q)
  n_blocks = padded_q // block_q
  c_lanes = 16
  while c_lanes < c:
    c_lanes *= 2
  flops = 2 * padded_q * dim * rows
  read_queries = padded_q * dim * itemsize
  read_bank = n_blocks * (rows * dim * itemsize + rows * 4)
  write_lists = padded_q * c_lanes * (4 + 4)
  return flops, read_queries + read_bank + write_lists


def pallas_configs(backend, n_q, rows):
  """The autotuner's Pallas candidates for this slice, in its order."""
  return [cf for cf in autotune.candidates(backend, rows, TILE, n_q) if cf.variant == "pallas"]


def kernel_cost(t, cfg, n_q, rows, dim):
  """The kernel's cost estimate at configuration `cfg`, checked against the count by hand."""
  c = min(max(scan.CANDIDATE_GROUPS, 2 * K), rows // scan.GROUP)
  # On NVIDIA the kernel pads D with zeros to a multiple of dim_block, and its cost estimate
  # (made after the padding) counts the padded D; on TPU it takes D whole.
  kdim = dim if cfg.dim_block is None else -(-dim // cfg.dim_block) * cfg.dim_block
  est = pallas_fused.cost(n_q, rows, kdim, c=c, block_q=cfg.block_q, search_itemsize=2)
  flops, nbytes = hand_cost(n_q, rows, kdim, c=c, block_q=cfg.block_q, itemsize=2)
  assert (int(est.flops), int(est.bytes_accessed)) == (flops, nbytes), (
      "pallas_fused.cost disagrees with the count by hand", est, flops, nbytes)
  intensity = flops / nbytes
  ridge = t.peak_bf16_flops / t.bandwidth
  return dict(block_q=cfg.block_q, block_b=cfg.tile, dim_block=cfg.dim_block, c=c,
              kernel_dim=kdim, flops=flops, bytes=nbytes, intensity=intensity, ridge=ridge,
              bound="compute" if intensity >= ridge else "memory",
              roofline_seconds=max(flops / t.peak_bf16_flops, nbytes / t.bandwidth),
              hand_count_agrees=True)


def bare_program(mesh):
  """bf16 queries x bank slice (f32 accumulation), top_k(k=1) per chip, winners merged."""
  def body(qs, bank):
    s = lax.dot_general(qs, bank, (((1,), (1,)), ((), ())), preferred_element_type=jnp.float32)
    v, i = lax.top_k(s, K)
    i = i + lax.axis_index(parallel.BANK) * bank.shape[0]
    v = lax.all_gather(v, parallel.BANK, axis=1, tiled=True)
    i = lax.all_gather(i, parallel.BANK, axis=1, tiled=True)
    v, pos = lax.top_k(v, K)
    return v, jnp.take_along_axis(i, pos, axis=1)
  return jax.jit(jax.shard_map(body, mesh=mesh,
                               in_specs=(P(parallel.DATA, None), P(parallel.BANK, None)),
                               out_specs=(P(parallel.DATA, None), P(parallel.DATA, None)),
                               check_vma=False))


def step_program(mesh, c):
  """One step of the XLA scan: `scan.scan_tiles` over a one-tile slice per chip."""
  def body(qc, qs, bank, mu, bn):
    return scan.scan_tiles(qc, qs, bank, mu, bn, tile=TILE, c=c,
                           search_dtype=jnp.bfloat16, precision=None)
  return jax.jit(jax.shard_map(
      body, mesh=mesh,
      in_specs=(P(parallel.DATA, None), P(parallel.DATA, None), P(parallel.BANK, None), P(),
                P(parallel.BANK)),
      out_specs=(P(parallel.DATA, None), P(parallel.DATA, None)), check_vma=False))


def _error(e):
  text = str(e)
  vmem = re.search(r"Scoped allocation with size (\S+) and limit (\S+) exceeded", text)
  if vmem:  # libtpu's VMEM overflow: the message's sizes, not its HLO
    return (f"{type(e).__name__}: CompileTimeScopedVmemOom: the kernel's VMEM blocks need "
            f"{vmem.group(1)}, the scoped VMEM limit is {vmem.group(2)}".replace("M,", " MiB,")
            .rstrip("M") + " MiB")
  lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
  return f"{type(e).__name__}: {' '.join(lines[:3])[:400]}"


def _compile(log, what, target, mesh, fn, *args):
  """aot.compile, or None (logged) if it does not compile."""
  t0 = time.perf_counter()
  try:
    try:
      compiled = aot.compile(target, fn, *args)
    except ValueError as e:
      # JAX >= 0.11: aot.lowering's abstract mesh (one 'aot' axis) is not the shard_map
      # program's mesh, which jax.shard_map refuses. The program's own abstract mesh names the
      # same device (kind, cores), so compile under it and say so.
      if "should match the mesh passed to shard_map" not in str(e):
        raise
      note = (f"{target} {what}: aot.compile refused ({_error(e)[:160]}...); compiled under "
              "the program mesh's own abstract mesh instead")
      if note not in log:
        log.append(note)
      ctx = (jax.sharding.use_abstract_mesh(mesh.abstract_mesh)
             if hasattr(jax.sharding, "use_abstract_mesh") else contextlib.nullcontext())
      with ctx:
        compiled = fn.lower(*args).compile()
  except Exception as e:  # pylint: disable=broad-except
    msg = _error(e)
    log.append(f"{target} {what}: did not compile: {msg}")
    print(f"  {what}: did not compile ({time.perf_counter() - t0:.0f} s): {msg}", flush=True)
    return None
  print(f"  {what}: compiled in {time.perf_counter() - t0:.0f} s", flush=True)
  return compiled


_HLO_BYTES = {"bf16": 2, "f16": 2, "f32": 4, "s32": 4, "u32": 4, "f64": 8, "s64": 8, "pred": 1,
              "s8": 1, "u8": 1}


def operand_bytes(compiled, ca):
  """XLA's bytes per entry parameter ('bytes accessedN{}'), by the parameter's name in the
  program, with the parameter's own size: {name: (bytes accessed, size)}."""
  text = compiled.as_text()
  entry = text[text.index("ENTRY"):]
  out = {}
  for m in re.finditer(r"= (\w+)\[([\d,]*)\][^ ]* parameter\((\d+)\)"
                       r"(?:, metadata=\{op_name=\"([^\"]+)\")?", entry):
    dtype, dims, n, name = m.groups()
    size = _HLO_BYTES.get(dtype, 4)
    for d in filter(None, dims.split(",")):
      size *= int(d)
    key = f"bytes accessed{n}{{}}"
    if key in ca:
      out[name or f"param{n}"] = (float(ca[key]), size)
  if "bytes accessedout{}" in ca:
    out["outputs"] = (float(ca["bytes accessedout{}"]), None)
  return out


def topk_program(mesh, c):
  """The XLA scan's per-step candidate merge alone: lax.top_k(c) of [q, c + groups] per chip."""
  return jax.jit(jax.shard_map(lambda x: tuple(lax.top_k(x, c)), mesh=mesh,
                               in_specs=P(parallel.DATA, None),
                               out_specs=(P(parallel.DATA, None), P(parallel.DATA, None)),
                               check_vma=False))


def _cfg(cfg):
  return (f"{cfg.variant} block_b={cfg.tile} block_q={cfg.block_q}"
          + (f" dim_block={cfg.dim_block}" if cfg.dim_block else ""))


def bench(target, dim, bank_rows, n_q, log):
  t = aot.target(target)
  mesh = aot.mesh(target)
  nb = mesh.shape[parallel.BANK]
  q_chip = n_q // mesh.shape[parallel.DATA]
  rows = slice_rows(bank_rows, nb)
  backend = "gpu" if t.platform == "cuda" else "tpu"
  out = dict(target=target, platform=t.platform, chips=len(aot.devices(target)), dim=dim,
             bank=bank_rows, queries=n_q, queries_per_chip=q_chip, rows_per_chip=rows,
             hbm_bytes=t.hbm_bytes, peak_bf16_flops=t.peak_bf16_flops, bandwidth=t.bandwidth,
             ridge=t.peak_bf16_flops / t.bandwidth,
             dense_flops=2 * q_chip * rows * dim,
             peak_seconds=2 * q_chip * rows * dim / t.peak_bf16_flops)
  print(f"{target}: bank {bank_rows:,} x {dim:,}, {n_q:,} queries; per chip {rows:,} rows "
        f"x {q_chip:,} queries", flush=True)
  configs = pallas_configs(backend, q_chip, rows)
  out["kernel"] = kernel_cost(t, configs[0], q_chip, rows, dim) if configs else None
  if not configs:
    log.append(f"{target}: the autotuner proposes no Pallas kernel at this shape")
  args = search_args(mesh, n_q, rows, dim)
  # The Pallas program at the first candidate; if it does not compile, the next ones in the
  # autotuner's order (it drops those that do not compile) until one does.
  for i, cfg in enumerate(configs):
    fn = scan.search_program(mesh, k=K, config=cfg, search_dtype=jnp.bfloat16)
    compiled = _compile(log, f"Pallas program {_cfg(cfg)}", target, mesh, fn, *args)
    if compiled is None:
      out.setdefault("pallas_not_compiled", []).append(_cfg(cfg))
      continue
    out["pallas_config"] = _cfg(cfg)
    out["pallas_first_candidate"] = i == 0
    if i:
      out["kernel_compiled"] = kernel_cost(t, cfg, q_chip, rows, dim)
    out["pallas_bytes_per_chip"] = aot.bytes_per_chip(compiled)
    out["pallas_custom_calls"] = sorted(aot.custom_calls(compiled))
    if t.platform == "tpu":
      out["pallas_program_xla"] = summarize(costs(compiled), t)
    break
  if t.platform != "tpu":
    out["xla_cost_analysis"] = "none: a GPU program compiled without a device has none here"
    return out

  # 2. The XLA scan: whole program (loop body counted once) and one step on its own.
  fn = scan.search_program(mesh, k=K, config=autotune.Config("xla", TILE),
                           search_dtype=jnp.bfloat16)
  compiled = _compile(log, "XLA-scan program", target, mesh, fn, *args)
  c = min(max(scan.CANDIDATE_GROUPS, 2 * K), rows // scan.GROUP)
  step = _compile(log, "one XLA-scan step", target, mesh, step_program(mesh, c),
                  sds(mesh, (n_q, dim), P(parallel.DATA, None)),
                  sds(mesh, (n_q, dim), P(parallel.DATA, None), jnp.bfloat16),
                  sds(mesh, (TILE * nb, dim), P(parallel.BANK, None)), sds(mesh, (dim,), P()),
                  sds(mesh, (TILE * nb,), P(parallel.BANK)))
  if compiled is not None:
    ca = costs(compiled)
    out["cost_analysis_keys"] = sorted(k for k in ca if not k[-1] == "}")
    out["xla_scan_bytes_per_chip"] = aot.bytes_per_chip(compiled)
    out["xla_scan_raw"] = summarize(ca, t)
    if step is not None:
      steps = rows // TILE
      sc = costs(step)
      out["xla_scan_step"] = summarize(sc, t)
      scaled = {k: float(ca.get(k, 0.0)) + (steps - 1) * float(sc.get(k, 0.0))
                for k in ("flops", "bytes accessed")}
      s = summarize(scaled, t)
      key = time_key(sc)
      if key is not None and float(sc[key]) > 0:  # XLA's time for one step, times the steps
        s["model_seconds"] = s["model_seconds_raw"] = steps * float(sc[key])
      s["time_key"] = f"{steps} x one step's {key}"
      out["xla_scan_step_operands"] = operand_bytes(step, sc)
      out["xla_scan"] = dict(s, steps=steps)
    # The step's running top-c merge alone (XLA lowers it to a sort of [q, c + groups]): its
    # share of a step in XLA's model.
    merge = _compile(log, f"one step's top_k({c} of {c + TILE // scan.GROUP})", target, mesh,
                     topk_program(mesh, c),
                     sds(mesh, (n_q, c + TILE // scan.GROUP), P(parallel.DATA, None)))
    if merge is not None:
      out["xla_scan_step_topk"] = summarize(costs(merge), t)

  # 3. The bare bf16 matmul + top_k.
  compiled = _compile(log, "bare matmul + top_k", target, mesh, bare_program(mesh),
                      sds(mesh, (n_q, dim), P(parallel.DATA, None), jnp.bfloat16),
                      sds(mesh, (rows * nb, dim), P(parallel.BANK, None), jnp.bfloat16))
  if compiled is not None:
    out["bare"] = summarize(costs(compiled), t)
    out["bare_bytes_per_chip"] = aot.bytes_per_chip(compiled)
  return out


def _s(x):
  return "–" if x is None else (f"{x:.3f}" if x < 10 else f"{x:.1f}")


def _gb(x):
  return "–" if x is None else f"{x / 1e9:.2f}"


def _times(r):
  if r is None:
    return "did not compile"
  return f"{_s(r['model_seconds'])} / {_s(r['roofline_seconds'])} ({r['bound'][:3]})"


def _pallas_mem(r):
  if r.get("pallas_bytes_per_chip") is None:
    return "did not compile"
  gb = _gb(r["pallas_bytes_per_chip"])
  if r.get("pallas_first_candidate"):
    return gb
  k = r["kernel_compiled"]
  return f"{gb} ({k['block_b']}x{k['block_q']}; first did not compile)"


def print_table(results):
  print(f"\nALL NUMBERS ARE {NOTE.upper()}.")
  print("Per chip; k = 1, bfloat16 search; rows = the chip's bank slice (padded to the 2,048-row "
        "tile). Kernel: the fused Pallas kernel's cost_estimate at the autotuner's first "
        "candidate. XLA est.: XLA's time model ('optimal_seconds') / max(flops/peak, bytes/BW) "
        "from XLA's flops and bytes, and which bound that is; the XLA scan's loop body scaled "
        "by its steps.")
  print("\n| shape | chip (slice) | rows/chip | kernel TFLOP | kernel GB | kernel flop/B | ridge "
        "flop/B | kernel bound | kernel roofline s | bf16-peak s | XLA scan, XLA est. s | "
        "matmul+top_k, XLA est. s | Pallas program, XLA est. s | mem XLA scan GB | mem Pallas GB | HBM GB |")
  print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
  for r in results:
    shape = f"{r['bank']:,} x {r['dim']:,}, {r['queries']:,} q"
    kern = r["kernel"] or {}
    chip = f"{r['target']} ({r['chips']})"
    gpu = r["platform"] != "tpu"
    print(f"| {shape} | {chip} | {r['rows_per_chip']:,} | "
          f"{kern.get('flops', 0) / 1e12:.2f} | {_gb(kern.get('bytes'))} | "
          f"{kern.get('intensity', 0):.0f} | {r['ridge']:.0f} | {kern.get('bound', '–')} | "
          f"{_s(kern.get('roofline_seconds'))} | {_s(r['peak_seconds'])} | "
          f"{'n/a (GPU: none)' if gpu else _times(r.get('xla_scan'))} | "
          f"{'n/a (GPU: none)' if gpu else _times(r.get('bare'))} | "
          f"{'n/a (GPU: none)' if gpu else _times(r.get('pallas_program_xla'))} | "
          f"{'–' if gpu else _gb(r.get('xla_scan_bytes_per_chip'))} | "
          f"{_pallas_mem(r)} | {r['hbm_bytes'] / 1e9:.1f} |")
  print()
  for r in results:
    head = f"{r['target']} {r['bank']:,} x {r['dim']:,}:"
    for name in ("kernel", "kernel_compiled"):
      kern = r.get(name)
      if kern:
        print(f"{head} {'first candidate' if name == 'kernel' else 'compiled candidate'} "
              f"block_b {kern['block_b']}, block_q {kern['block_q']}, c {kern['c']}"
              f"{', D padded to ' + str(kern['kernel_dim']) if kern['kernel_dim'] != r['dim'] else ''}"
              f": cost_estimate = count by hand ({kern['flops']:.4g} flops, {kern['bytes']:.4g} B, "
              f"{kern['intensity']:.0f} flop/B vs ridge {kern['ridge']:.0f}: {kern['bound']}-bound)")
    if r.get("pallas_not_compiled"):
      print(f"{head} Pallas program did not compile at: {'; '.join(r['pallas_not_compiled'])}")
    if r["platform"] != "tpu":
      print(f"{head} no XLA cost analysis (GPU compiled without a device); Pallas (Triton) "
            f"program {_gb(r.get('pallas_bytes_per_chip'))} GB of {r['hbm_bytes'] / 1e9:.0f} GB")
      continue
    print(f"{head} cost_analysis keys: {', '.join(r.get('cost_analysis_keys', []))} "
          "(+ per-operand 'bytes accessedN{}' / 'utilizationN{}')")
    for name in ("xla_scan_raw", "xla_scan_step", "xla_scan_step_topk", "xla_scan", "bare",
                 "pallas_program_xla"):
      v = r.get(name)
      if v:
        raw = v["model_seconds_raw"]
        print(f"{head}   {name:<18} flops {v['flops']:.4g}, bytes {v['bytes']:.4g}, "
              f"{v['time_key'] or 'time'} {'–' if raw is None else f'{raw:.4g}'}"
              f", max(F/peak, B/BW) {v['roofline_seconds']:.4g} s ({v['bound']})")
    ops = r.get("xla_scan_step_operands")
    if ops:
      print(f"{head}   one step's bytes by operand (XLA): " + ", ".join(
          (f"{n} {b / 1e9:.3g} GB" + (f" ({b / size:.0f}x its {size / 1e6:.3g} MB)" if size else "")
           if b >= 0 else f"{n} unknown")
          for n, (b, size) in ops.items()))
    if r.get("bare_bytes_per_chip"):
      print(f"{head}   bare matmul+top_k memory {_gb(r['bare_bytes_per_chip'])} GB per chip")


def main(argv):
  del argv
  t0 = time.perf_counter()
  stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
  machine = dict(jax=jax.__version__, python=platform.python_version(),
                 cpu=platform.processor() or platform.machine(), date=stamp)
  try:
    from importlib import metadata  # pylint: disable=g-import-not-at-top
    machine["libtpu"] = metadata.version("libtpu")
  except Exception:  # pylint: disable=broad-except
    pass
  print(f"machine: {machine}\n{NOTE}", flush=True)
  results, log = [], []
  for spec in _SHAPES.value:
    dim, bank_rows, n_q = (int(v) for v in spec.split(":"))
    for target in _TARGETS.value:
      results.append(bench(target, dim, bank_rows, n_q, log))
  print_table(results)
  if log:
    print("\nDid not compile / not available:\n" + "\n".join(f"- {line}" for line in log))
  print(f"\n{time.perf_counter() - t0:.0f} s in all")
  print(json.dumps(dict(benchmark="aot", note=NOTE, machine=machine, failures=log,
                        results=results)))


if __name__ == "__main__":
  app.run(main)
