import { createReadStream } from 'node:fs'
import type { Command } from 'commander'
import { parseRuntimeConfigDocument } from '../../schemas/runtime-config.ts'
import { documentWarnings } from '../../schemas/runtime-config-warnings.ts'
import { AgentError, namingPath } from '../errors.ts'
import type { Reporter } from '../output.ts'

/** KV's largest value: a bigger document cannot be stored, so reading on would only use memory. */
const MAX_DOCUMENT_BYTES = 25 * 1024 * 1024

/**
 * `deltaport config check <file|->`: what the edge would make of a runtime config document before it
 * is stored in KV: refused (the edge would keep its last good one), or accepted with values it would
 * ignore or override (documentWarnings). Bucket bindings are only known to the Worker: GET /v1/config
 * lists those once the document is in force.
 */
export function registerConfigCommands(program: Command, reporter: () => Reporter): void {
  program
    .command('config')
    .description("check edge runtime config documents (KV CONFIG, key 'runtime')")
    .command('check <file>')
    .description('validate a runtime config document as the edge would (- reads stdin)')
    .option('--allow-warnings', 'exit 0 when the document is valid but has ignored values')
    .action(async (file: string, options: { allowWarnings?: boolean }) => {
      const out = reporter()
      const name = file === '-' ? 'stdin' : file
      // A read stream's error may carry no path (EISDIR): name the document, as every io failure does.
      const text = await namingPath(name, readDocument(file, name))
      const parsed = parseRuntimeConfigDocument(text)
      if (!parsed.ok) {
        for (const issue of parsed.issues) out.info(`error: ${issue.path || '(document)'}: ${issue.message}`)
        throw new AgentError(
          'check-failed',
          `${name}: invalid; the edge would reject it and keep its last good config`,
          { issues: parsed.issues },
        )
      }
      const warnings = documentWarnings(text, parsed.config)
      for (const warning of warnings) out.info(`warning: ${warning.path}: ${warning.message}`)
      if (warnings.length > 0 && !options.allowWarnings)
        throw new AgentError(
          'check-failed',
          `${name}: valid, but the edge would ignore ${warnings.length} value(s) (--allow-warnings accepts them)`,
          { warnings },
        )
      out.result('ok', { warnings })
    })
}

/** The document's text from a file or stdin (`-`), named `name` in errors, at most MAX_DOCUMENT_BYTES. */
async function readDocument(file: string, name: string): Promise<string> {
  const source = file === '-' ? process.stdin : createReadStream(file)
  const chunks: Buffer[] = []
  let size = 0
  for await (const chunk of source) {
    const bytes = Buffer.isBuffer(chunk) ? chunk : Buffer.from(String(chunk))
    size += bytes.length
    if (size > MAX_DOCUMENT_BYTES) {
      source.destroy()
      throw new AgentError(
        'check-failed',
        `${name}: larger than ${MAX_DOCUMENT_BYTES} bytes, KV's limit for one value`,
      )
    }
    chunks.push(bytes)
  }
  return Buffer.concat(chunks).toString('utf8')
}
