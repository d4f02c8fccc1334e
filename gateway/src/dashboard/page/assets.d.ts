// The dashboard's static files are imported as text (`with { type: "text" }`) so that they are
// embedded in a `bun build --compile` binary, like the .proto files (lib/proto-text.d.ts).
declare module "*.client.js" {
  const text: string;
  export default text;
}
declare module "*.css" {
  const text: string;
  export default text;
}
declare module "uplot/dist/uPlot.iife.min.js" {
  const text: string;
  export default text;
}
