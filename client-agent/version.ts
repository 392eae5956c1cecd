import { readFileSync } from 'node:fs'
import { z } from 'zod'

/**
 * The agent's version. The bundled agent (scripts/build-agent.ts) gets it inlined by esbuild's `define`,
 * so the installed package never looks for a package.json; run from source, it is the repo's package.json
 * next to client-agent/.
 */
declare const DELTAPORT_AGENT_VERSION: string | undefined

const PackageVersion = z.object({ version: z.string().min(1).max(64) })

export function agentVersion(): string {
  if (typeof DELTAPORT_AGENT_VERSION === 'string') return DELTAPORT_AGENT_VERSION
  const text = readFileSync(new URL('../package.json', import.meta.url), 'utf8')
  return PackageVersion.parse(JSON.parse(text)).version
}

/** `deltaport --version` / `-V` as the first argument only: `publish --version <v>` is a publish option. */
export function isVersionRequest(argv: readonly string[]): boolean {
  return argv[0] === '--version' || argv[0] === '-V'
}
