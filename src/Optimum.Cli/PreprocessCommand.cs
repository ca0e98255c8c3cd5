using System.CommandLine;
using Optimum.Core;
using Optimum.Data;
using Optimum.Models;

namespace Optimum.Cli;

/// <summary><c>optimum-net preprocess</c>: <see cref="Preprocessor.Run"/> with progress on stderr.</summary>
public static class PreprocessCommand
{
    public static Command Create()
    {
        var data = new Option<string[]>("--data") { Description = "Text files (one document each), .jsonl files (one document per line) or folders (searched for *.txt and *.jsonl).", Required = true, AllowMultipleArgumentsPerToken = true };
        var output = new Option<string>("--out", "-o") { Description = "Dataset prefix: writes <prefix>.bin (ids) and <prefix>.idx (index).", Required = true };
        var tokenizer = new Option<string>("--tokenizer") { Description = "Model folder whose tokenizer to use (the dataset then trains only models with that tokenizer).", DefaultValueFactory = _ => CliPaths.Bundled("models/gpt2-mini") };
        var key = new Option<string>("--json-key") { Description = "Field of a .jsonl record that holds the text.", DefaultValueFactory = _ => "text" };
        var workers = new Option<int>("--workers") { Description = "Tokenizing threads (default: cores).", DefaultValueFactory = _ => Environment.ProcessorCount };
        var cmd = new Command("preprocess", "Tokenize text ahead into a memory-mapped dataset (<prefix>.bin + <prefix>.idx) for train --data <prefix> or --data-blend.")
        {
            data, output, tokenizer, key, workers,
        };
        cmd.SetAction(r => ExpectedErrors.Report(() =>
        {
            if (r.GetValue(workers) < 1) throw new ArgumentException($"--workers {r.GetValue(workers)} must be at least 1.");
            var prefix = r.GetValue(output)!;
            if (Directory.Exists(prefix)) throw new ArgumentException($"--out '{prefix}' is a folder; give a prefix such as {Path.Combine(prefix, "corpus")} (writes corpus.bin and corpus.idx).");
            var tok = ModelKinds.DocumentTokenizer(r.GetValue(tokenizer)!);
            bool live = !Console.IsErrorRedirected;
            var result = Preprocessor.Run(new PreprocessOptions { Inputs = r.GetValue(data)!, OutputPrefix = prefix, JsonKey = r.GetValue(key)!, Workers = r.GetValue(workers) }, tok,
                w => Console.Error.WriteLine((live ? "\r\u001b[K" : "") + w),
                p => Console.Error.Write(live ? $"\r\u001b[K{p}" : $"{p}\n"));
            if (live) Console.Error.WriteLine();
            Console.WriteLine($"wrote {result.Prefix}.bin and .idx: {result.Documents:N0} documents, {result.Tokens:N0} ids ({(result.BytesPerId == 2 ? "uint16" : "int32")}), "
                + $"{result.Bytes / 1e6:N1} MB of text in {result.Elapsed.TotalSeconds:F1} s ({result.MegabytesPerSecond:N1} MB/s on {result.Workers} worker(s), {result.TokenizerShare:P0} in the tokenizer: {result.TokenizeSeconds:F1} thread-seconds)");
            return 0;
        }));
        return cmd;
    }
}
