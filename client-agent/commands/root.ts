import { type Command, InvalidArgumentError } from 'commander'
import { MAX_ROOT_KEYS } from '../../schemas/root.ts'
import { type AgentConfig, publishToken } from '../config.ts'
import { removingTempsOnStop } from '../fs/stop-signals.ts'
import type { Reporter } from '../output.ts'
import {
  createRoot,
  describeReport,
  edgeRoot,
  publicKeyProblem,
  publishRoot,
  signRootFile,
  untrustedRoot,
  verifyRootFile,
} from '../root-metadata.ts'
import { parseDays } from './arguments.ts'

interface CreateOptions {
  version?: number
  expiresDays: number
  from?: string
  rootKey?: string[]
  rootThreshold?: number
  maintainerKey?: string[]
  maintainerThreshold?: number
  indexKey?: string[]
  key: string[]
  out: string
}

/** A root version: 1 to 1 000 000, digits only (what the schema allows). */
function parseRootVersion(value: string): number {
  if (!/^[1-9]\d{0,6}$/.test(value) || Number(value) > 1_000_000)
    throw new InvalidArgumentError('a root version: a whole number from 1 to 1000000')
  return Number(value)
}

function parseThreshold(value: string): number {
  if (!/^\d{1,2}$/.test(value) || Number(value) < 1 || Number(value) > MAX_ROOT_KEYS)
    throw new InvalidArgumentError(`a threshold: a whole number from 1 to ${MAX_ROOT_KEYS}`)
  return Number(value)
}

/** A repeatable option (`--key a --key b`): not variadic, which would swallow the positional file. */
function repeated(parse: (value: string) => string) {
  return (value: string, previous: string[] | undefined): string[] => [...(previous ?? []), parse(value)]
}

function parsePublicKey(value: string): string {
  const problem = publicKeyProblem(value)
  if (problem) throw new InvalidArgumentError(problem)
  return value
}

const asIs = (value: string) => value

/**
 * `deltaport root create|sign|verify|publish|show`: root metadata for maintainers (ADR 0035): which
 * keys devices trust for what, how many must agree, and the signed chain that rotates them.
 */
export function registerRootCommands(
  program: Command,
  reporter: () => Reporter,
  config: () => Promise<AgentConfig>,
): void {
  const root = program
    .command('root')
    .description('root metadata: the keys devices trust, their thresholds, and signed rotation')

  root
    .command('create')
    .description('write a new root signed by --key (or the next one, --from the current root)')
    .option('--version <n>', 'root version (default with --from: one above it)', parseRootVersion)
    .requiredOption('--expires-days <days>', 'days until the root expires', parseDays)
    .option('--from <root.json>', 'start from this root: its keys, roles and thresholds, one version up')
    .option(
      '--root-key <publicKey>',
      'a root key (repeat; replaces the --from root keys)',
      repeated(parsePublicKey),
    )
    .option(
      '--root-threshold <k>',
      'root keys that must sign the next root (default 1, or --from)',
      parseThreshold,
    )
    .option(
      '--maintainer-key <publicKey>',
      'a maintainer key (repeat; replaces the --from maintainer keys)',
      repeated(parsePublicKey),
    )
    .option(
      '--maintainer-threshold <k>',
      'maintainer keys that must sign (default 1, or --from)',
      parseThreshold,
    )
    .option(
      '--index-key <publicKey>',
      "the edge's index key (repeat; replaces the --from index keys)",
      repeated(parsePublicKey),
    )
    .requiredOption('--key <file>', 'sign with this key file (repeat for more signatures)', repeated(asIs))
    .requiredOption('--out <file>', 'where to write the root (never replaced)')
    .action(async (options: CreateOptions) => {
      const report = await removingTempsOnStop(() =>
        createRoot({
          ...(options.version === undefined ? {} : { version: options.version }),
          expiresDays: options.expiresDays,
          ...(options.from === undefined ? {} : { from: options.from }),
          root: { publicKeys: options.rootKey, threshold: options.rootThreshold },
          maintainers: { publicKeys: options.maintainerKey, threshold: options.maintainerThreshold },
          ...(options.indexKey === undefined ? {} : { index: { publicKeys: options.indexKey } }),
          keyFiles: options.key,
          out: options.out,
        }),
      )
      const out = reporter()
      out.info(describeReport(report))
      out.result(
        report.problems.length === 0
          ? `wrote ${options.out}: root ${report.version}, ready to publish`
          : `wrote ${options.out}: root ${report.version}, still to sign (deltaport root sign ${options.out} --key …)`,
        { root: report },
      )
    })

  root
    .command('sign <file>')
    .description('add a signature per --key to a root file (replacing one by the same key)')
    .requiredOption('--key <file>', 'sign with this key file (repeat for more signatures)', repeated(asIs))
    .action(async (file: string, options: { key: string[] }) => {
      const signed = await removingTempsOnStop(() => signRootFile({ file, keyFiles: options.key }))
      const out = reporter()
      for (const keyid of signed.notOwnRootKeys)
        out.info(
          `note: ${keyid} is not a root key of root ${signed.report.version}; its signature counts only if it is a root key of root ${signed.report.version - 1}`,
        )
      out.info(describeReport(signed.report))
      out.result(
        `signed ${file} with ${signed.added.length} key(s)${signed.report.problems.length === 0 ? '' : ` (still: ${signed.report.problems.join('; ')})`}`,
        { root: signed.report, added: signed.added },
      )
    })

  root
    .command('verify <file>')
    .description('check a root stands on its own and, with --previous, may follow that root')
    .option('--previous <file>', 'the root this one is to follow (one version down)')
    .action(async (file: string, options: { previous?: string }) => {
      const report = await verifyRootFile({
        file,
        ...(options.previous === undefined ? {} : { previous: options.previous }),
      })
      const out = reporter()
      out.info(describeReport(report))
      if (report.problems.length > 0) throw untrustedRoot(report, `${file} would be refused`)
      out.result(
        `${file}: root ${report.version} verifies${options.previous ? ` and may follow ${options.previous}` : ''}`,
        { root: report },
      )
    })

  root
    .command('publish <file>')
    .description('check a root against the edge’s previous one, then upload it (needs DELTAPORT_TOKEN)')
    .action(async (file: string) => {
      const loaded = await config()
      const published = await publishRoot({ edgeUrl: loaded.edgeUrl, token: publishToken(), file })
      reporter().result(
        published.created
          ? `published root ${published.report.version}`
          : `root ${published.report.version} is already on the edge (same document)`,
        { root: published.report, created: published.created },
      )
    })

  root
    .command('show')
    .description("the edge's root (latest by default): version, expiry, each role's keys and threshold")
    .option('--version <n>', 'this root version instead of the latest', parseRootVersion)
    .action(async (options: { version?: number }) => {
      const loaded = await config()
      const shown = await edgeRoot({
        edgeUrl: loaded.edgeUrl,
        ...(options.version === undefined ? {} : { version: options.version }),
      })
      reporter().result(describeReport(shown.report), { root: shown.report, document: shown.document })
    })
}
