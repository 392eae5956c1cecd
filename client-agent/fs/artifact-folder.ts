import { ArtifactName } from '../../schemas/common.ts'

/**
 * An artifact's folder name under the install root and the staging area: the name URI-encoded, so a
 * scoped name (`@scope/app`) is one path segment.
 */
export const artifactFolder = (name: string): string => encodeURIComponent(name)

/**
 * The artifact a folder under the install root (or the staging area) belongs to, or null for anything
 * else found there: the agent's own dot-folders (.trust, .staging, .telemetry), temp entries, and
 * names that do not decode (a stray `%zz`) or are not artifact names. Listing the root must skip
 * those, never fail on them: a folder someone left there must not stop every install.
 */
export function artifactOfFolder(folder: string): string | null {
  if (folder.startsWith('.')) return null
  let name: string
  try {
    name = decodeURIComponent(folder)
  } catch {
    return null
  }
  return ArtifactName.safeParse(name).success ? name : null
}
