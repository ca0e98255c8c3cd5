using System.CommandLine;
using Optimum.Core;
using Optimum.Hub;
using Optimum.Inference;
using Optimum.Inference.Quantization;
using Optimum.Models;

namespace Optimum.Cli;

/// <summary><c>optimum-net quantize</c>: parses, then <see cref="ModelQuantizer"/> and, with --evaluate, <see cref="QualityComparison"/>.</summary>
public static class QuantizeCommand
{
    public static Command Create()
    {
        var src = new Argument<string>("model-folder") { Description = "Model folder with config.json, its inference graphs and model.safetensors (float32)." };
        var dst = new Option<string>("--out", "-o") { Description = "Folder to write the quantized model to (written whole or not at all).", Required = true };
        var weights = new Option<string>("--weights") { Description = "int8 or int4.", Required = true };
        var block = new Option<int>("--block-size") { Description = "Weights per scale along K: a power of two >= 16.", DefaultValueFactory = _ => 32 };
        var symmetric = new Option<bool>("--symmetric") { Description = "No zero points: each block's scale is max|w| / (2^(bits-1) - 1), centred on 0." };
        var op = new Option<string>("--int8-operator") { Description = "int8 only: dynamic (com.microsoft.DynamicQuantizeMatMul, per-column weights; the faster here) or matmulnbits (block-wise, bits=8).", DefaultValueFactory = _ => "dynamic" };
        var accuracy = new Option<int>("--accuracy-level") { Description = "MatMulNBits accuracy_level: 4 multiplies int8-quantized activations (fastest on CPU), 0 float32.", DefaultValueFactory = _ => 4 };
        var evaluate = new Option<string?>("--evaluate") { Description = "Text file (causal LMs): perplexity of its last 5% (the training split's validation part) and greedy agreement, float32 vs quantized." };
        var evalTokens = new Option<int>("--eval-tokens") { Description = "At most this many held-out tokens for --evaluate.", DefaultValueFactory = _ => 16384 };
        var reduceRange = new Option<bool>("--reduce-range") { Description = "int8 dynamic only: weight codes in [-63, 63] (scale max|w|/63), so ONNX Runtime's uint8 x int8 kernels on x86 CPUs without VNNI cannot saturate." };
        var overwrite = new Option<bool>("--overwrite") { Description = "Replace an existing non-empty --out folder entirely (otherwise refused)." };
        var cmd = new Command("quantize", "Weight-only int8/int4 quantization of a model folder's inference graphs (ONNX Runtime MatMulNBits / DynamicQuantizeMatMul); the output loads in generate, serve and the library.")
            { src, dst, weights, block, symmetric, op, accuracy, evaluate, evalTokens, reduceRange, overwrite };
        cmd.SetAction(r => ExpectedErrors.Report(() =>
        {
            string from = r.GetValue(src)!, to = CliPaths.OutputFolder(r.GetValue(dst)!, "--out");
            var o = new QuantizeOptions
            {
                Weights = ModelQuantizer.Parse(r.GetValue(weights)!, "--weights"),
                BlockSize = r.GetValue(block),
                ZeroPoints = !r.GetValue(symmetric),
                AccuracyLevel = r.GetValue(accuracy),
                ReduceRange = r.GetValue(reduceRange),
                Overwrite = r.GetValue(overwrite),
                Int8Operator = r.GetValue(op)!.ToLowerInvariant() switch
                {
                    "matmulnbits" => Int8Operator.MatMulNBits,
                    "dynamic" => Int8Operator.DynamicQuantizeMatMul,
                    var s => throw new ArgumentException($"--int8-operator: '{s}' is not matmulnbits or dynamic."),
                },
            };
            var text = r.GetValue(evaluate);
            if (text is not null && !File.Exists(text)) throw new FileNotFoundException($"--evaluate: '{text}' does not exist.", text);
            ModelQuantizer.Validate(o);
            ModelQuantizer.CheckOutput(from, to, o.Overwrite);
            // --evaluate needs a causal LM: the float32 model is loaded (and checked) before anything is written.
            using var f = text is null ? null : ModelKinds.Load(from);
            if (f is not null && f.Generator?.CausalModel is null)
                throw new NotSupportedException($"--evaluate measures causal language models; '{from}' is a {f.Task.WireName()} model.");
            ModelQuantizer.Quantize(from, to, o);
            // Both sides count what inference reads: the graphs and model.safetensors (not a float32 folder's training graphs).
            long Bytes(string d) => ModelQuantizer.InferenceGraphs.Append(ModelFolder.WeightsFile).Select(n => Path.Combine(d, n)).Where(File.Exists).Sum(n => new FileInfo(n).Length);
            Console.WriteLine($"wrote {to} ({o.Describe()}): graphs and weights {Bytes(to) / 1e6:F1} MB (float32 {Bytes(from) / 1e6:F1} MB)");
            if (o.PerColumn && !o.ReduceRange && ModelQuantizer.X86WithoutVnni)
                Console.Error.WriteLine("warning: this x86 CPU has no VNNI; ONNX Runtime's uint8 x int8 kernels can saturate with full-range int8 weights. Consider --reduce-range.");
            if (f is null) return 0;
            using var q = ModelKinds.Load(to);
            var (fl, ql) = (f.Generator!.CausalModel!, q.Generator?.CausalModel);
            if (ql is null) throw new InvalidDataException($"--evaluate: the quantized folder '{to}' did not load as a causal language model.");
            var ids = Gpt2Tokenizer.Create().Encode(File.ReadAllText(text!));
            var heldOut = ids.Skip((int)(ids.Count * 0.95)).ToArray();
            var c = QualityComparison.Measure(fl, ql, heldOut, r.GetValue(evalTokens));
            Console.WriteLine($"perplexity over {c.Float32.Tokens} held-out tokens: float32 {c.Float32.Perplexity:F3}, {o.Weights.Wire()} {c.Quantized.Perplexity:F3} ({c.PerplexityIncrease * 100:+0.00;-0.00}%)");
            Console.WriteLine($"greedy agreement with float32 over {c.AgreementTokens} tokens (4 prompts): {c.Agreement * 100:F1}%"
                + (c.Agreement < 1 ? $" (first difference after {c.MeanFirstDifference:F1} tokens on average)" : ""));
            return 0;
        }));
        return cmd;
    }
}
