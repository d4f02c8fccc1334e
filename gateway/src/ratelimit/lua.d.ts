// The GCRA script is imported as text (`with { type: "text" }`) so that it is embedded in a
// `bun build --compile` binary, like the .proto files (lib/proto-text.d.ts).
declare module "*.lua" {
  const text: string;
  export default text;
}
