// Prints the functions with the most self time in a V8 .cpuprofile (node --cpu-prof), as a table:
//   node bench/profile-top.js FILE.cpuprofile [rows]
const fs = require('node:fs')
const path = require('node:path')
const file = process.argv[2]
const rows = Number(process.argv[3] ?? 25)
const p = JSON.parse(fs.readFileSync(file, 'utf8'))
const byId = new Map(p.nodes.map((n) => [n.id, n]))
const self = new Map()
const dt = p.timeDeltas
let total = 0
p.samples.forEach((id, i) => {
  const n = byId.get(id)
  const f = n.callFrame
  const key = `${f.functionName || '(anonymous)'} ${f.url ? `${path.basename(f.url)}:${f.lineNumber + 1}` : ''}`.trim()
  const d = dt[i] ?? 0
  self.set(key, (self.get(key) ?? 0) + d)
  total += d
})
console.log(`| function (${path.basename(file)}) | self time | share |`)
console.log('| --- | --- | --- |')
for (const [k, v] of [...self].sort((a, b) => b[1] - a[1]).slice(0, rows)) {
  console.log(`| ${k} | ${(v / 1000).toFixed(0)} ms | ${((100 * v) / total).toFixed(1)} % |`)
}
