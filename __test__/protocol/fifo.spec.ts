import test from 'ava'

import { Fifo } from '../../src/protocol/fifo'

test('Fifo: order kept through shifts, removals from the middle and the compaction of its prefix', (t) => {
  const q = new Fifo<number>()
  const model: number[] = []
  let next = 0
  let seed = 7
  const rand = (n: number): number => {
    seed = (seed * 1103515245 + 12345) & 0x7fffffff
    return seed % n
  }
  for (let step = 0; step < 20_000; step++) {
    const op = rand(10)
    if (op < 5) {
      q.push(next)
      model.push(next++)
    } else if (op < 9) {
      t.is(q.shift(), model.shift())
    } else if (model.length > 0) {
      const victim = model[rand(model.length)]!
      t.is(
        q.remove((x) => x === victim),
        victim,
      )
      model.splice(model.indexOf(victim), 1)
    }
    if (q.length !== model.length || q.peek() !== model[0]) t.fail(`step ${step}: ${q.length} vs ${model.length}`)
  }
  t.is(
    q.remove(() => false),
    undefined,
  )
  t.deepEqual(q.takeAll(), model)
  t.is(q.length, 0)
  t.is(q.shift(), undefined)
})
