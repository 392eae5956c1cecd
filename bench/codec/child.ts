/**
 * One deltaport measurement in its own Node process, so its time and peak memory are its own:
 *   node bench/codec/child.ts make     <method> <source> <target> <delta-out>
 *   node bench/codec/child.ts apply    <method> <source> <delta>  <out>
 *   node bench/codec/child.ts apply-plain … (the same, through a reader without the optional readInto)
 *   node bench/codec/child.ts baseline <method>
 * The module is loaded dynamically (colleagues are still writing it). The last stdout line is a JSON
 * ChildReport. Time covers reading the inputs, the codec call and writing the output, not Node's start
 * or the module import; memory is process.resourceUsage().maxRSS at the end (KiB, whole process).
 */
import { existsSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { pathToFileURL } from 'node:url'
import { useNativeCrc32 } from '../../client-agent/codec/native-crc32.ts'
import { nativeDeflateEngine } from '../../client-agent/codec/native-deflate.ts'
import { openFileReader, openFileSource } from '../../client-agent/fs/file-io.ts'
import type { DeflateEngine } from '../../delta/archive/index.ts'
import type { ByteSink, ByteSource, RandomAccessReader } from '../../delta/io.ts'
import { REPO } from './corpus.ts'
import { fileSink } from './file-io.ts'
import { type ChildReport, METHODS, type OurMethod } from './result.ts'

const MODULES: Record<OurMethod, string> = {
  vcdiff: 'delta/vcdiff/index.ts',
  approx: 'delta/approx/index.ts',
  archive: 'delta/archive/index.ts',
  best: 'delta/index.ts',
}

type Bytes = Uint8Array
type Module = Record<string, unknown>
type StreamApply = (
  source: RandomAccessReader,
  delta: ByteSource,
  sink: ByteSink,
  options?: object,
) => Promise<void>

/** Exported function `name` of `mod`, or undefined: module shapes are checked at run time. */
function fn<T>(mod: Module, name: string): T | undefined {
  const f = mod[name]
  return typeof f === 'function' ? (f as T) : undefined
}

function need<T>(mod: Module, name: string, file: string): T {
  const f = fn<T>(mod, name)
  if (!f) throw new Skip(`${file} has no ${name}() yet`)
  return f
}

class Skip extends Error {}

const AGENT_APPLY_OPTIONS = { deflateEngine: nativeDeflateEngine }

function isBytes(x: unknown): x is Uint8Array {
  return x instanceof Uint8Array
}

async function load(method: OurMethod): Promise<Module> {
  const file = MODULES[method]
  const path = join(REPO, file)
  if (!existsSync(path)) throw new Skip(`${file} does not exist yet`)
  try {
    return (await import(pathToFileURL(path).href)) as Module
  } catch (err) {
    throw new Error(`import ${file} failed: ${describe(err)}`)
  }
}

interface Made {
  delta: Bytes
  note?: string
}

async function make(method: OurMethod, mod: Module, source: Bytes, target: Bytes): Promise<Made> {
  const file = MODULES[method]
  switch (method) {
    case 'vcdiff':
      return { delta: need<(s: Bytes, t: Bytes) => Bytes>(mod, 'encodeVcdiff', file)(source, target) }
    case 'approx':
      return { delta: need<(s: Bytes, t: Bytes) => Bytes>(mod, 'createApproxDelta', file)(source, target) }
    case 'archive': {
      const create = need<(s: Bytes, t: Bytes, o: object) => unknown>(mod, 'createArchiveDelta', file)
      const r = create(source, target, { deflateEngine: nativeDeflateEngine }) as {
        delta?: unknown
        details?: Record<string, unknown>
      } & {
        notApplicable?: unknown
      }
      if (typeof r.notApplicable === 'string') throw new Skip(`not applicable: ${r.notApplicable}`)
      if (!isBytes(r.delta)) throw new Error('createArchiveDelta returned no delta')
      const d = r.details ?? {}
      // How each target deflate stream is rebuilt (only the ways that occur).
      const ways = (['reproduced', 'spliced', 'reblocked', 'puffed'] as const)
        .filter((k) => typeof d[k] === 'number' && d[k] > 0)
        .map((k) => `${String(d[k])} ${k}`)
      return {
        delta: r.delta,
        note: `inner ${String(d.differ)}, ${String(d.streams)} streams: ${ways.join(', ') || 'none rebuilt'}`,
      }
    }
    case 'best': {
      // What the publisher runs (client-agent/publish-deltas.ts).
      const create = need<(s: Bytes, t: Bytes, o: object) => unknown>(mod, 'createDeltaAsync', file)
      const r = (await create(source, target, { deflateEngine: nativeDeflateEngine })) as {
        delta?: unknown
        method?: unknown
      }
      if (!isBytes(r.delta)) throw new Error('createDelta returned no delta')
      return { delta: r.delta, note: `createDelta chose ${String(r.method)}` }
    }
  }
}

/** The streaming apply of `method` when the module has one (source read over a file descriptor). */
function streamApply(method: OurMethod, mod: Module): StreamApply | undefined {
  switch (method) {
    case 'vcdiff':
      return fn<StreamApply>(mod, 'decodeVcdiffStream')
    case 'approx':
      return fn<StreamApply>(mod, 'applyApproxDeltaStream')
    case 'best':
      return fn<StreamApply>(mod, 'applyDeltaStream')
    case 'archive':
      return undefined // applyArchiveDeltaToSink takes the source and delta as arrays: handled below
  }
}

async function apply(
  method: OurMethod,
  mod: Module,
  src: string,
  deltaPath: string,
  out: string,
  readInto = true,
) {
  const file = MODULES[method]
  const stream = streamApply(method, mod)
  if (stream) {
    const agentReader = await openFileReader(src)
    // apply-plain: the same reader minus readInto, to show what a reader without it costs in peak RSS.
    const reader = readInto
      ? agentReader
      : { size: agentReader.size, read: agentReader.read, close: agentReader.close }
    const sink = fileSink(out)
    const delta = await openFileSource(deltaPath)
    try {
      // What the agent passes: archive rebuilds use Node's zlib where it reproduces pako.
      await stream(reader, delta, sink, method === 'best' ? AGENT_APPLY_OPTIONS : undefined)
    } finally {
      await Promise.all([reader.close(), delta.close()])
      sink.close()
    }
    return 'stream' as const
  }
  if (method === 'archive') {
    type ToSink = (
      s: Bytes,
      d: Bytes,
      sink: ByteSink,
      limits: undefined,
      differs: undefined,
      engine: DeflateEngine,
    ) => Promise<void>
    const toSink = fn<ToSink>(mod, 'applyArchiveDeltaToSink')
    if (toSink) {
      const sink = fileSink(out)
      try {
        await toSink(
          readFileSync(src),
          readFileSync(deltaPath),
          sink,
          undefined,
          undefined,
          nativeDeflateEngine,
        )
      } finally {
        sink.close()
      }
      return 'stream' as const
    }
  }
  const names: Record<OurMethod, string> = {
    vcdiff: 'decodeVcdiff',
    approx: 'applyApproxDelta',
    archive: 'applyArchiveDelta',
    best: 'applyDelta',
  }
  const applyBuf = need<(s: Bytes, d: Bytes) => unknown>(mod, names[method], file)
  const result = await applyBuf(readFileSync(src), readFileSync(deltaPath))
  if (!isBytes(result)) throw new Error(`${names[method]} returned no bytes`)
  writeFileSync(out, result)
  return 'buffer' as const
}

function describe(err: unknown): string {
  if (!(err instanceof Error)) return String(err)
  const code = (err as { code?: unknown }).code
  const where = err.stack
    ?.split('\n')
    .map((l) => l.trim())
    .find((l) => l.startsWith('at ') && l.includes('/delta/'))
    ?.replace(/^at (.*?)\(?file:\/\/.*?\/(delta\/[^)]*)\)?$/, 'at $1$2')
  return `${err.name}${typeof code === 'string' ? `[${code}]` : ''}: ${err.message}${where ? ` (${where})` : ''}`
}

const rss = () => process.resourceUsage().maxRSS

async function main(): Promise<ChildReport> {
  const [op, methodArg, a, b, c] = process.argv.slice(2)
  const method = METHODS.find((m) => m === methodArg)
  if (!method) throw new Error(`unknown method ${methodArg}`)
  const mod = await load(method)
  // As the `deltaport` CLI runs (client-agent/bin/deltaport.ts), which both publisher and agent use.
  useNativeCrc32()
  if (op === 'baseline') return { status: 'ok', maxRssKiB: rss() }
  if (!a || !b || !c) throw new Error('usage: child.ts make|apply <method> <a> <b> <out>')
  if (op === 'make') {
    const t0 = performance.now()
    const made = await make(method, mod, readFileSync(a), readFileSync(b))
    writeFileSync(c, made.delta)
    return {
      status: 'ok',
      ms: performance.now() - t0,
      maxRssKiB: rss(),
      deltaBytes: made.delta.length,
      ...(made.note ? { note: made.note } : {}),
    }
  }
  if (op === 'apply' || op === 'apply-plain') {
    const t0 = performance.now()
    const form = await apply(method, mod, a, b, c, op === 'apply')
    return { status: 'ok', ms: performance.now() - t0, maxRssKiB: rss(), form }
  }
  throw new Error(`unknown op ${op}`)
}

main().then(
  (r) => console.log(JSON.stringify(r)),
  (err: unknown) => {
    const r: ChildReport =
      err instanceof Skip
        ? { status: 'skipped', note: err.message }
        : { status: 'error', note: describe(err), maxRssKiB: rss() }
    console.log(JSON.stringify(r))
  },
)
