import { readFile, writeFile } from 'node:fs/promises'
import type { Command } from 'commander'
import { DeltaFormatError } from '../../delta/errors.ts'
import { applyDeltaStream, createDelta, type DeltaMethodId } from '../../delta/index.ts'
import { nativeDeflateEngine } from '../codec/native-deflate.ts'
import { AgentError } from '../errors.ts'
import { fileSource, openAtomicFileSink, openFileReader } from '../fs/file-io.ts'
import { formatBytes, type Reporter } from '../output.ts'

const METHODS: readonly DeltaMethodId[] = ['vcdiff', 'approx', 'archive']

/** `deltaport delta make|apply`: the codec on files, for maintainers and for debugging a delta. */
export function registerDeltaCommands(program: Command, reporter: () => Reporter): void {
  const delta = program.command('delta').description('make or apply a binary delta between two files')

  delta
    .command('make <source> <target> <out>')
    .description('write the smallest delta that turns source into target')
    .option('--method <method...>', `restrict to methods (${METHODS.join(', ')})`)
    .action(async (sourcePath: string, targetPath: string, out: string, options: { method?: string[] }) => {
      const methods = options.method?.map((m) => {
        if (!METHODS.includes(m as DeltaMethodId)) throw new AgentError('usage', `unknown method "${m}"`)
        return m as DeltaMethodId
      })
      const [source, target] = await Promise.all([readFile(sourcePath), readFile(targetPath)])
      const made = createDelta(source, target, {
        deflateEngine: nativeDeflateEngine,
        ...(methods ? { methods } : {}),
      })
      await writeFile(out, made.delta)
      const tried = made.candidates
        .map(
          (c) =>
            `${c.method}: ${c.size === undefined ? `skipped (${c.skipped})` : formatBytes(c.size)} in ${c.ms.toFixed(0)} ms`,
        )
        .join('; ')
      reporter().result(
        `${out}: ${formatBytes(made.delta.length)} via ${made.method} (${((made.delta.length / Math.max(target.length, 1)) * 100).toFixed(2)} % of the target) — ${tried}`,
        {
          delta: {
            path: out,
            size: made.delta.length,
            method: made.method,
            targetSize: target.length,
            candidates: made.candidates,
          },
        },
      )
    })

  delta
    .command('apply <source> <delta> <out>')
    .description('rebuild the target from source + delta, streaming; out appears only if it verifies')
    .action(async (sourcePath: string, deltaPath: string, out: string) => {
      const source = await openFileReader(sourcePath)
      const sink = await openAtomicFileSink(out)
      try {
        const method = await applyDeltaStream(source, fileSource(deltaPath), sink, {
          deflateEngine: nativeDeflateEngine,
        })
        await sink.commit()
        reporter().result(`${out}: rebuilt via ${method}`, { apply: { path: out, method } })
      } catch (error) {
        await sink.discard()
        if (error instanceof DeltaFormatError)
          throw new AgentError('integrity-mismatch', `bad delta: ${error.message}`)
        throw error
      } finally {
        await source.close()
      }
    })
}
