/**
 * deltaport methods, each make and each apply in a fresh Node child (bench/codec/child.ts) so its time
 * and peak memory are isolated; the round trip is verified here, byte for byte, against the target.
 */
import { mkdirSync, rmSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import type { Pair } from './corpus.ts'
import { filesEqual, type RunResult, runMeasured } from './measure.ts'
import type { ChildReport, MethodResult, OurMethod } from './result.ts'

const CHILD = join(dirname(fileURLToPath(import.meta.url)), 'child.ts')

function parseReport(r: RunResult): ChildReport | string {
  const line = r.stdout.trim().split('\n').slice(-1)[0] ?? ''
  try {
    const parsed = JSON.parse(line) as ChildReport
    if (parsed && typeof parsed.status === 'string') return parsed
  } catch {
    // fall through: the child died before reporting (crash, out of memory, signal)
  }
  const err = r.stderr
    .trim()
    .split('\n')
    .filter((l) => /Error|error|heap|Killed|signal/.test(l))
    .slice(-1)[0]
  return `child exited ${r.code ?? 'by signal'}${err ? `: ${err.trim().slice(0, 200)}` : ''}`
}

function child(args: string[], timeoutMs: number, timeFile: string): Promise<RunResult> {
  return runMeasured(process.execPath, ['--no-warnings', CHILD, ...args], { timeoutMs, timeFile })
}

/** Peak RSS of a child that only loads the method's module: Node's own footprint, for reference. */
export async function baselineRss(method: OurMethod, workDir: string): Promise<number | undefined> {
  mkdirSync(workDir, { recursive: true })
  const r = parseReport(await child(['baseline', method], 60_000, join(workDir, `baseline.time`)))
  return typeof r === 'string' || r.status !== 'ok' ? undefined : r.maxRssKiB
}

export async function runOurs(
  method: OurMethod,
  pair: Pair,
  workDir: string,
  timeoutMs: number,
): Promise<MethodResult> {
  mkdirSync(workDir, { recursive: true })
  const delta = join(workDir, `dp-${method}.delta`)
  const out = join(workDir, `dp-${method}.out`)
  const timeFile = join(workDir, `dp-${method}.time`)
  const base: MethodResult = { method, family: 'ours', status: 'ok' }
  try {
    const m = await child(['make', method, pair.sourcePath, pair.targetPath, delta], timeoutMs, timeFile)
    if (m.timedOut) return { ...base, status: 'timeout', note: `make > ${timeoutMs / 1000} s` }
    const mr = parseReport(m)
    if (typeof mr === 'string') return { ...base, status: 'error', note: `make: ${mr}` }
    if (mr.status !== 'ok') return { ...base, status: mr.status, note: `make: ${mr.note ?? ''}` }
    const result: MethodResult = {
      ...base,
      deltaBytes: mr.deltaBytes,
      makeMs: mr.ms,
      makeRssKiB: mr.maxRssKiB,
      ...(mr.note ? { note: mr.note } : {}),
    }
    const a = await child(['apply', method, pair.sourcePath, delta, out], timeoutMs, timeFile)
    if (a.timedOut) return { ...result, status: 'timeout', note: `apply > ${timeoutMs / 1000} s` }
    const ar = parseReport(a)
    if (typeof ar === 'string') return { ...result, status: 'error', note: `apply: ${ar}` }
    if (ar.status !== 'ok') return { ...result, status: ar.status, note: `apply: ${ar.note ?? ''}` }
    Object.assign(result, { applyMs: ar.ms, applyRssKiB: ar.maxRssKiB, applyForm: ar.form })
    if (!filesEqual(out, pair.targetPath)) {
      result.status = 'mismatch'
      result.note = [result.note, 'round trip differs from the target'].filter(Boolean).join('; ')
    } else if (pair.big && ar.form === 'stream') {
      // Memory is judged on the big pair: also show what a reader without readInto costs (information).
      rmSync(out, { force: true })
      const plain = parseReport(
        await child(['apply-plain', method, pair.sourcePath, delta, out], timeoutMs, timeFile),
      )
      if (typeof plain !== 'string' && plain.status === 'ok' && filesEqual(out, pair.targetPath)) {
        Object.assign(result, { applyPlainMs: plain.ms, applyPlainRssKiB: plain.maxRssKiB })
      }
    }
    return result
  } finally {
    rmSync(delta, { force: true })
    rmSync(out, { force: true })
  }
}
