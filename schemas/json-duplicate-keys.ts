/**
 * Keys a JSON text repeats within one object. JSON.parse keeps the last silently, so in a hand-edited
 * document (the runtime config) a second `"devices": {…}` further down discards the first without a
 * word, and nothing after parsing can tell. Only called on text JSON.parse accepted.
 */

/** One open object or array: where it sits, and (objects) the keys it has and whether a key comes next. */
interface Open {
  path: string
  keys: Set<string> | null
  keyNext: boolean
  lastKey: string
  index: number
}

/** Dot-joined paths (`devices`, `zones.map.EU`) of each repeated key, at most `limit` of them. */
export function duplicateKeyPaths(text: string, limit = 32): string[] {
  const found: string[] = []
  const stack: Open[] = []
  let i = 0
  while (i < text.length && found.length < limit) {
    const c = text[i]
    const top = stack.at(-1)
    if (c === '"') {
      const end = endOfString(text, i)
      if (top?.keys && top.keyNext) {
        const key = String(JSON.parse(text.slice(i, end)))
        if (top.keys.has(key)) found.push(join(top.path, key))
        top.keys.add(key)
        top.lastKey = key
        top.keyNext = false
      }
      i = end
      continue
    }
    if (c === '{' || c === '[') {
      const path = top === undefined ? '' : join(top.path, top.keys ? top.lastKey : String(top.index))
      stack.push({ path, keys: c === '{' ? new Set() : null, keyNext: c === '{', lastKey: '', index: 0 })
    } else if (c === '}' || c === ']') stack.pop()
    else if (c === ',' && top) {
      if (top.keys) top.keyNext = true
      else top.index += 1
    }
    i += 1
  }
  return found
}

/** Index just past the string literal that opens at `start` (a `"`), escapes skipped. */
function endOfString(text: string, start: number): number {
  let i = start + 1
  while (i < text.length && text[i] !== '"') i += text[i] === '\\' ? 2 : 1
  return i + 1
}

function join(path: string, key: string): string {
  return path === '' ? key : `${path}.${key}`
}
