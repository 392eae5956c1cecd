import { describe, expect, it } from 'vitest'
import { duplicateKeyPaths } from './json-duplicate-keys.ts'

describe('duplicateKeyPaths', () => {
  it('finds keys an object repeats, at any depth, and nothing in valid documents without them', () => {
    expect(duplicateKeyPaths('{"a":1,"b":{"c":2},"d":[{"e":1},{"e":2}]}')).toEqual([])
    expect(duplicateKeyPaths('{"devices":{"x":1},"stream":{},"devices":{}}')).toEqual(['devices'])
    expect(duplicateKeyPaths('{"zones":{"map":{"EU":"weur","NA":"wnam","EU":"apac"}}}')).toEqual([
      'zones.map.EU',
    ])
    // Array elements are objects of their own; their paths carry the index.
    expect(duplicateKeyPaths('{"z":[{"id":1},{"id":2,"id":3}]}')).toEqual(['z.1.id'])
  })

  it('reads keys as JSON does: escapes decoded, string values and brackets inside strings ignored', () => {
    expect(duplicateKeyPaths('{"a\\"b":1,"a\\u0022b":2}')).toEqual(['a"b'])
    expect(duplicateKeyPaths('{"a":"a","b":"{\\"a\\":1,","c":"]"}')).toEqual([])
    expect(duplicateKeyPaths('{ "a" : 1 ,\n "a" : 2 }')).toEqual(['a'])
  })

  it('stops at the limit', () => {
    const text = `{${Array.from({ length: 50 }, () => '"k":1').join(',')}}`
    expect(duplicateKeyPaths(text, 5)).toHaveLength(5)
  })
})
