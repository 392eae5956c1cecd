/**
 * Running one measured child: wall time from the parent, peak RSS from GNU time (`/usr/bin/time -f %M`,
 * the ru_maxrss that wait4 reports for the child: the largest resident set of the child or of any
 * descendant it waited for, e.g. the gzip that xdelta3 runs), and a hard timeout that kills the child's
 * whole process group (the child is started detached, so the group is exactly what we spawned).
 */
import { spawn } from 'node:child_process'
import { closeSync, existsSync, openSync, readFileSync, readSync, rmSync, statSync } from 'node:fs'

export const GNU_TIME = '/usr/bin/time'
/** Checked once; without GNU time peers' peak memory is reported as unknown rather than guessed. */
export const hasGnuTime = existsSync(GNU_TIME)

export interface RunResult {
  /** Exit code, or null when killed. */
  code: number | null
  timedOut: boolean
  wallMs: number
  /** Peak RSS in KiB from GNU time; undefined when it could not be measured. */
  maxRssKiB: number | undefined
  stdout: string
  stderr: string
}

export async function runMeasured(
  cmd: string,
  args: readonly string[],
  opts: { timeoutMs: number; timeFile: string; env?: NodeJS.ProcessEnv },
): Promise<RunResult> {
  const argv = hasGnuTime ? [GNU_TIME, '-f', '%M', '-o', opts.timeFile, cmd, ...args] : [cmd, ...args]
  rmSync(opts.timeFile, { force: true })
  const started = performance.now()
  const child = spawn(argv[0]!, argv.slice(1), {
    stdio: ['ignore', 'pipe', 'pipe'],
    detached: true,
    env: opts.env ?? process.env,
  })
  let stdout = ''
  let stderr = ''
  child.stdout.setEncoding('utf8').on('data', (s: string) => {
    stdout += s
  })
  child.stderr.setEncoding('utf8').on('data', (s: string) => {
    if (stderr.length < 64 * 1024) stderr += s
  })
  let timedOut = false
  const timer = setTimeout(() => {
    timedOut = true
    if (child.pid !== undefined) {
      try {
        process.kill(-child.pid, 'SIGKILL')
      } catch {
        // already gone
      }
    }
  }, opts.timeoutMs)
  const code = await new Promise<number | null>((resolve, reject) => {
    child.on('error', reject)
    child.on('close', (c) => resolve(c))
  })
  clearTimeout(timer)
  const wallMs = performance.now() - started
  let maxRssKiB: number | undefined
  if (hasGnuTime && existsSync(opts.timeFile)) {
    // GNU time writes "Command exited with non-zero status N" before the format line on failure.
    const lines = readFileSync(opts.timeFile, 'utf8').trim().split('\n')
    const n = Number(lines[lines.length - 1])
    if (Number.isFinite(n) && n > 0) maxRssKiB = n
  }
  rmSync(opts.timeFile, { force: true })
  return { code, timedOut, wallMs, maxRssKiB, stdout, stderr }
}

/** Byte-for-byte file comparison in 1 MiB chunks (never holds either file whole). */
export function filesEqual(a: string, b: string): boolean {
  if (!existsSync(a) || !existsSync(b)) return false
  if (statSync(a).size !== statSync(b).size) return false
  const fa = openSync(a, 'r')
  const fb = openSync(b, 'r')
  try {
    const ba = Buffer.alloc(1 << 20)
    const bb = Buffer.alloc(1 << 20)
    for (;;) {
      const na = readSync(fa, ba, 0, ba.length, null)
      const nb = readSync(fb, bb, 0, bb.length, null)
      if (na !== nb) return false
      if (na === 0) return true
      if (!ba.subarray(0, na).equals(bb.subarray(0, nb))) return false
    }
  } finally {
    closeSync(fa)
    closeSync(fb)
  }
}

export const fileSize = (p: string): number => (existsSync(p) ? statSync(p).size : 0)
