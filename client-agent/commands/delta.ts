import { createHash } from 'node:crypto'
import { stat } from 'node:fs/promises'
import { type Command, InvalidArgumentError } from 'commander'
import { z } from 'zod'
import { resolveLimits as approxLimits } from '../../delta/approx/format.ts'
import { ARCHIVE_TOO_LARGE } from '../../delta/archive/limits.ts'
import { DeltaFormatError, isAllocationFailure, isLimitError } from '../../delta/errors.ts'
import {
  applyDeltaStream,
  createDeltaStream,
  type DeltaMethodId,
  MAX_SOURCE_WINDOW,
  type StreamDeltaMethod,
} from '../../delta/index.ts'
import { resolveLimits as vcdiffLimits } from '../../delta/vcdiff/limits.ts'
import { Sha256Hex } from '../../schemas/common.ts'
import {
  APPLY_BYTES_PER_EXPANDED_BYTE,
  APPLY_BYTES_PER_TABLE_ENTRY,
  APPLY_FIXED_BYTES,
  CODEC_CEILING,
  deviceArchiveLimits,
  deviceMemoryBytes,
} from '../codec/archive-budget.ts'
import { nativeDeflateEngine } from '../codec/native-deflate.ts'
import { makeDeltaOffThread } from '../codec/off-thread-make.ts'
import { AgentError } from '../errors.ts'
import { writeFileAtomic } from '../fs/atomic.ts'
import {
  closingAll,
  openAtomicFileSink,
  openFileReader,
  openFileSource,
  regularFileSize,
} from '../fs/file-io.ts'
import { removingTempsOnStop } from '../fs/stop-signals.ts'
import { formatBytes, type Reporter } from '../output.ts'

const METHODS: readonly DeltaMethodId[] = ['vcdiff', 'approx', 'archive']
/** Above this, `delta make` streams instead of reading both files into memory. */
const IN_MEMORY_MAX = 2 ** 30

interface MakeOptions {
  method?: DeltaMethodId[]
  stream?: boolean
  sourceWindow?: number
}

/**
 * `--method vcdiff,approx` or `--method vcdiff --method approx`. Not a variadic option: that would
 * swallow the source, target and out that follow it on the command line.
 */
function collectMethods(value: string, previous: DeltaMethodId[] | undefined): DeltaMethodId[] {
  const methods = value.split(',').map((m) => m.trim())
  const unknown = methods.find((m) => !METHODS.includes(m as DeltaMethodId))
  if (unknown !== undefined)
    throw new InvalidArgumentError(`unknown method "${unknown}" (${METHODS.join(', ')})`)
  return [...(previous ?? []), ...(methods as DeltaMethodId[])]
}

const MiB = 2 ** 20

/**
 * A commander parser for a size given in MiB, from 1 to `maxMiB`: digits only (no 1e3, no fractions,
 * no signs or spaces), as bytes.
 */
function mebibytes(maxMiB: number): (value: string) => number {
  const schema = z
    .string()
    .regex(/^\d{1,10}$/)
    .transform(Number)
    .pipe(z.number().int().min(1).max(maxMiB))
  return (value) => {
    const parsed = schema.safeParse(value)
    if (!parsed.success) throw new InvalidArgumentError(`a whole number of MiB from 1 to ${maxMiB}`)
    return parsed.data * MiB
  }
}

/** The widest source window the codec can index; how much of it this machine can hold is found out. */
const parseSourceWindow = mebibytes(Math.floor(MAX_SOURCE_WINDOW / MiB))

interface ApplyOptions {
  maxMemory?: number
  sha256?: string
  maxWindow?: number
}

/**
 * `--max-window`: the VCDIFF decoder addresses a window with 32-bit indexes, so 2047 MiB is the most
 * it can take; whether this machine can hold one (with its encoded form, up to 3 bytes per window
 * byte) is found out when the window is allocated (applyFailure).
 */
const parseMaxWindow = mebibytes(2047)

/** The decoders' limits for `--max-window`: a delta the user trusts, with windows or blocks that large. */
function windowLimits(maxWindow: number | undefined) {
  if (maxWindow === undefined) return {}
  return { vcdiff: { maxWindowSize: maxWindow }, approx: { maxBlockSize: maxWindow } }
}

function parseSha256(value: string): string {
  const parsed = Sha256Hex.safeParse(value.toLowerCase())
  if (!parsed.success) throw new InvalidArgumentError('64 hex digits')
  return parsed.data
}

/** Nothing is allocated by it (the memory the process can get caps it), so any sane amount. */
const parseMemoryMiB = mebibytes(9_999_999)

/** How big a delta is next to its target, in words that survive an empty target. */
function shareOfTarget(deltaBytes: number, targetBytes: number): string {
  return targetBytes === 0
    ? 'the target is empty'
    : `${((deltaBytes / targetBytes) * 100).toFixed(2)} % of the target`
}

/** `delta make --stream`: createDeltaStream between two files, written atomically to `out`. */
async function makeStreaming(
  sourcePath: string,
  targetPath: string,
  out: string,
  methods: DeltaMethodId[] | undefined,
  sourceWindow: number | undefined,
  report: Reporter,
): Promise<void> {
  const byteMethods = methods?.filter((m): m is StreamDeltaMethod => m === 'vcdiff' || m === 'approx')
  if (byteMethods?.length === 0)
    throw new AgentError('usage', 'streaming makes vcdiff or approx deltas (archives need memory)')
  // One byte method named is that one; both (or none named) leave the choice to createDeltaStream, as
  // an unrestricted make would: approx for executables, VCDIFF otherwise. The order listed is no choice.
  const method = new Set(byteMethods).size === 1 ? byteMethods?.[0] : undefined
  await closingAll(async (own) => {
    const source = own(await openFileReader(sourcePath))
    const target = own(await openFileReader(targetPath))
    const sink = await openAtomicFileSink(out)
    let written = 0
    try {
      const used = await createDeltaStream(
        source,
        target,
        {
          write: async (chunk) => {
            written += chunk.length
            await sink.write(chunk)
          },
        },
        { ...(method ? { method } : {}), ...(sourceWindow ? { sourceWindow } : {}) },
      )
      await sink.commit()
      report.result(
        `${out}: ${formatBytes(written)} via ${used}, streamed (${shareOfTarget(written, target.size)})`,
        { delta: { path: out, size: written, method: used, targetSize: target.size, streamed: true } },
      )
    } catch (error) {
      await sink.discard()
      throw error
    }
  })
}

/**
 * Refuses an output that is one of the inputs (the same file by device and inode, so another spelling,
 * a hard link or a symlink to it counts): the rename at the end would replace the input with the output,
 * losing the very file the command read. A usage mistake, caught before anything is read.
 */
async function refuseOutputOverInput(out: string, inputs: Record<string, string>): Promise<void> {
  const target = await stat(out).catch(() => null)
  if (!target) return
  for (const [role, path] of Object.entries(inputs)) {
    const input = await stat(path).catch(() => null)
    if (input && input.dev === target.dev && input.ino === target.ino)
      throw new AgentError(
        'usage',
        `the output ${out} is the ${role} (${path}); write the output to another file`,
        {
          path: out,
        },
      )
  }
}

/**
 * Why an archive apply was refused, in the units the user gave: the memory allowed, what an apply
 * costs, and so how much expanded archive fits (the codec's own "limit" is that last number, which
 * is 0 bytes for any allowance below the fixed cost and meant nothing next to `--max-memory 1`).
 */
function memoryRefusal(maxMemory: number | undefined, codecMessage: string): string {
  const allowed = deviceMemoryBytes(maxMemory)
  const fits = deviceArchiveLimits(maxMemory).maxExpandedBytes
  // A roomy host reaches the codec's ceiling before its memory: more memory would not help there.
  if (fits >= CODEC_CEILING)
    return `this archive is too big to rebuild: an archive apply handles at most ${formatBytes(CODEC_CEILING)} of expanded archive (the larger side, the delta's tables and its bytes charged in it) whatever the memory (${formatBytes(allowed)} allowed here); ship this update as a full download or a byte-level delta (delta make --method approx) instead (${codecMessage})`
  return `not enough memory to rebuild this archive here: ${formatBytes(allowed)} allowed${maxMemory === undefined ? '' : ' (--max-memory)'}, and an archive apply needs ${formatBytes(APPLY_FIXED_BYTES)} plus ${APPLY_BYTES_PER_EXPANDED_BYTE} bytes per byte of expanded archive and ${APPLY_BYTES_PER_TABLE_ENTRY} per table entry of the delta and 1 per byte of it, which leaves room for ${formatBytes(fits)} of archive (${codecMessage})`
}

/**
 * A codec failure as what the user can do about it. A limit reached is not damage, and every limit is
 * `limit-exceeded` (exit 17), each with its own way out: the archive's memory limits (declared sizes or
 * a source that expands past them) say `--max-memory` or a roomier machine; the byte decoders' fixed
 * ceilings say remake the delta with smaller windows. Memory the machine has not is one code whichever
 * check finds it (the archive's budget before expanding, or an allocation refused while applying): two
 * codes for one cause would have scripts tell apart what the user cannot. Only the rest is a bad delta
 * (exit 8).
 */
function applyFailure(error: unknown, options: ApplyOptions): unknown {
  const { maxMemory, maxWindow } = options
  // Memory the machine would not give (most likely for a window --max-window let through) is a limit
  // as for delta make and the archive's memory refusal (exit 17), not a bug: the delta may be sound.
  if (isAllocationFailure(error))
    return new AgentError(
      'limit-exceeded',
      `not enough memory to apply this delta here: this machine could not allocate ${maxWindow === undefined ? 'its buffers' : `a window of up to ${formatBytes(maxWindow)} (--max-window: up to 3 bytes of memory per window byte)`}; apply it on a machine with more memory, or make the delta again with smaller windows`,
      { reason: (error as Error).message },
    )
  if (!(error instanceof DeltaFormatError)) return error
  if (error.code === 'archive-limit' || error.code === ARCHIVE_TOO_LARGE)
    return new AgentError('limit-exceeded', memoryRefusal(maxMemory, error.message), {
      codecCode: error.code,
      codecMessage: error.message,
    })
  // The codec's message names its own options (maxWindowSize): the user gets the ceilings in MiB and
  // what to do, the codec's words go in the details.
  const limits = windowLimits(maxWindow)
  if (isLimitError(error))
    return new AgentError(
      'limit-exceeded',
      `the delta exceeds a limit of this decoder, which does not make it damaged: it applies VCDIFF windows of up to ${formatBytes(vcdiffLimits(limits.vcdiff).maxWindowSize)} and approx blocks of up to ${formatBytes(approxLimits(limits.approx).maxBlockSize)}${maxWindow === undefined ? '' : ' (--max-window)'}; make the delta again with smaller windows (deltaport delta make does; xdelta3 -W 16M or less), or, for a delta you trust, raise the ceiling with --max-window <MiB> (up to 2047)`,
      { codecCode: error.code, codecMessage: error.message },
    )
  return new AgentError('integrity-mismatch', `bad delta: ${error.message}`)
}

/** A streaming make's failure: a source window this machine cannot hold is the option to lower (exit 17). */
function makeFailure(error: unknown): unknown {
  if (!(error instanceof DeltaFormatError) || !isLimitError(error)) return error
  return new AgentError(
    'limit-exceeded',
    error.message.replace('sourceWindow', '--source-window (default 32 MiB)'),
    { codecCode: error.code, codecMessage: error.message },
  )
}

/**
 * `delta make` of files up to IN_MEMORY_MAX: both read whole, every method that applies tried. In a
 * worker thread (codec/off-thread-make.ts), so a stop signal is handled at once rather than once the
 * method under way returns; `signal` terminates the worker.
 */
async function makeInMemory(
  sourcePath: string,
  targetPath: string,
  methods: DeltaMethodId[] | undefined,
  signal: AbortSignal,
) {
  const made = await makeDeltaOffThread(
    { source: { path: sourcePath }, target: { path: targetPath }, ...(methods ? { methods } : {}) },
    signal,
  )
  return { targetSize: made.targetSize, made }
}

/**
 * An in-memory make's failure as what the user can do. The methods asked for all declining the pair
 * (--method archive on plain files) is their choice, answered with each method's reason. Memory this
 * machine cannot give (both files, then the source's index: up to 4 more bytes per source byte) is a
 * limit, as for a streaming make's window (exit 17): --stream holds one source window at a time. Only
 * the CLI says so; the codec's createDelta keeps throwing the RangeError, which the edge's lazy deltas
 * must not remember as a failure of the pair.
 */
function inMemoryMakeFailure(error: unknown, filesBytes: number): unknown {
  if (error instanceof DeltaFormatError && error.code === 'no-method')
    return new AgentError('usage', `${error.message}; choose other --method values`)
  if (isAllocationFailure(error))
    return new AgentError(
      'limit-exceeded',
      `not enough memory to make this delta in memory: it holds both files (${formatBytes(filesBytes)}) and an index of the source (up to 4 bytes per source byte), and this machine could not allocate them; use --stream, which holds one source window at a time (--source-window, default 32 MiB)`,
      { reason: (error as Error).message },
    )
  return error
}

/** `deltaport delta make|apply`: the codec on files, for maintainers and for debugging a delta. */
export function registerDeltaCommands(program: Command, reporter: () => Reporter): void {
  const delta = program.command('delta').description('make or apply a binary delta between two files')

  delta
    .command('make <source> <target> <out>')
    .description('write the smallest delta that turns source into target')
    .option(
      '--method <methods>',
      `restrict to methods, comma-separated or repeated (${METHODS.join(', ')})`,
      collectMethods,
    )
    .option(
      '--stream',
      `window by window, for files larger than memory (automatic above ${IN_MEMORY_MAX / 2 ** 30} GiB; vcdiff or approx)`,
    )
    .option(
      '--source-window <MiB>',
      'source bytes matched per window when streaming (default 32; implies --stream)',
      parseSourceWindow,
    )
    .action((sourcePath: string, targetPath: string, out: string, options: MakeOptions) =>
      removingTempsOnStop(async (signal) => {
        await refuseOutputOverInput(out, { source: sourcePath, target: targetPath })
        const methods = options.method
        const sizes = await Promise.all([regularFileSize(sourcePath), regularFileSize(targetPath)])
        // A source window only means something window by window: asking for one asks for streaming.
        const stream = options.stream || options.sourceWindow !== undefined
        if (stream || sizes.some((size) => size > IN_MEMORY_MAX)) {
          await makeStreaming(sourcePath, targetPath, out, methods, options.sourceWindow, reporter()).catch(
            (error: unknown) => {
              throw makeFailure(error)
            },
          )
          return
        }
        const { targetSize, made } = await makeInMemory(sourcePath, targetPath, methods, signal).catch(
          (error: unknown) => {
            throw inMemoryMakeFailure(error, sizes[0] + sizes[1])
          },
        )
        await writeFileAtomic(out, made.delta)
        const tried = made.candidates
          .map(
            (c) =>
              `${c.method}: ${c.size === undefined ? `skipped (${c.skipped})` : formatBytes(c.size)} in ${c.ms.toFixed(0)} ms`,
          )
          .join('; ')
        reporter().result(
          `${out}: ${formatBytes(made.delta.length)} via ${made.method} (${shareOfTarget(made.delta.length, targetSize)}) — ${tried}`,
          {
            delta: {
              path: out,
              size: made.delta.length,
              method: made.method,
              targetSize,
              candidates: made.candidates,
            },
          },
        )
      }),
    )

  delta
    .command('apply <source> <delta> <out>')
    .description('rebuild the target from source + delta, streaming; out appears only if it verifies')
    .option(
      '--max-memory <MiB>',
      "memory an archive rebuild may use (default and upper bound: what this machine's memory allows)",
      parseMemoryMiB,
    )
    .option(
      '--sha256 <hex>',
      "the target's sha256: out appears only if the rebuilt bytes have it (a VCDIFF delta made without checksums, xdelta3 -n, carries nothing else to check)",
      parseSha256,
    )
    .option(
      '--max-window <MiB>',
      'largest VCDIFF window and approx block applied, for a delta you trust (default 64 and 16; 1 to 2047, up to 3 bytes of memory per window byte)',
      parseMaxWindow,
    )
    .action((sourcePath: string, deltaPath: string, out: string, options: ApplyOptions) =>
      removingTempsOnStop(async () => {
        await refuseOutputOverInput(out, { source: sourcePath, delta: deltaPath })
        await closingAll(async (own) => {
          const source = own(await openFileReader(sourcePath))
          const deltaBytes = own(await openFileSource(deltaPath))
          const sink = await openAtomicFileSink(out)
          const hash = createHash('sha256')
          try {
            const method = await applyDeltaStream(
              source,
              deltaBytes,
              {
                write: (chunk) => {
                  hash.update(chunk)
                  return sink.write(chunk)
                },
              },
              {
                deflateEngine: nativeDeflateEngine,
                ...windowLimits(options.maxWindow),
                // As in an update: an archive that cannot fit in this machine's memory is refused up front.
                archive: deviceArchiveLimits(options.maxMemory),
              },
            )
            const actual = hash.digest('hex')
            if (options.sha256 !== undefined && actual !== options.sha256)
              throw new AgentError(
                'integrity-mismatch',
                `the rebuilt bytes hash to ${actual}, not --sha256 ${options.sha256}: the wrong source for this delta, or a damaged one`,
              )
            await sink.commit()
            reporter().result(`${out}: rebuilt via ${method}, sha256 ${actual}`, {
              apply: { path: out, method, sha256: actual },
            })
          } catch (error) {
            await sink.discard()
            throw applyFailure(error, options)
          }
        })
      }),
    )
}
