// DuckDB's side of bench/frames_vs_duckdb.py: times read_csv into a table, a 100-group GROUP BY
// with the aggregates FRAME.GROUPBY computes, and sum(x), on one CSV with THREADS threads.
// Usage: node duckdb_bench.mjs FILE THREADS; prints one JSON object of milliseconds.
import { DuckDBInstance } from '@duckdb/node-api';

const [file, threads] = [process.argv[2], process.argv[3] ?? '2'];
const connection = await (await DuckDBInstance.create(':memory:', { threads })).connect();
const time = async (sql) => {
  const t0 = process.hrtime.bigint();
  await connection.runAndReadAll(sql);
  return Number(process.hrtime.bigint() - t0) / 1e6;
};
const out = { import_ms: await time(`CREATE TABLE t AS SELECT * FROM read_csv('${file}')`) };
out.groupby_ms = [];
for (let i = 0; i < 3; i++) {
  out.groupby_ms.push(await time(
      'SELECT k, count(*), sum(x), avg(x), min(q), max(q), stddev_samp(x) FROM t GROUP BY k'));
}
out.sum_ms = [];
for (let i = 0; i < 3; i++) out.sum_ms.push(await time('SELECT sum(x) FROM t'));
connection.closeSync();
process.stdout.write(JSON.stringify(out) + '\n');
