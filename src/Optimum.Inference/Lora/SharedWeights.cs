using System.Runtime.InteropServices;
using Google.Protobuf;
using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;
using Optimum.Core;
using Optimum.Hub;
using Optimum.Onnx;
using Optimum.Onnx.Proto;

namespace Optimum.Inference.Lora;

/// <summary>
/// A model folder's parameters in ONE native, 64-byte-aligned buffer that several inference sessions use as their initializers:
/// each session gets them through <see cref="SessionOptions.AddInitializer"/> (ORT takes the user's tensor as it is, no copy),
/// and all sessions share one <see cref="PrePackedWeightsContainer"/>, so the MatMul weights ORT pre-packs are packed once
/// for every session rather than once per session. In the graph given to <see cref="Open"/> each parameter becomes an
/// initializer whose data is the folder's model.safetensors (ONNX external data: file, offset, length), so the model proto
/// stays small and any reader of the entry sees the true values; ORT uses the shared tensor in its place. A MatMul by the
/// transpose of a parameter (GPT-2's tied LM head) becomes a FusedMatMul with transB, so ORT has no transpose to
/// constant-fold into a per-session copy. Thread-safe. Counts its users: the buffer is freed when <see cref="Dispose"/> was
/// called and every session made by <see cref="Open"/> has been released with <see cref="Release"/>.
/// </summary>
public sealed unsafe class SharedWeights : IDisposable
{
    private readonly Dictionary<string, (ParameterInfo Info, OrtValue Value, long Offset)> _byName = new(StringComparer.Ordinal);
    private readonly string _dir;
    private readonly string _file;
    private readonly IntPtr _buffer;
    private readonly PrePackedWeightsContainer? _prepacked;
    private readonly object _gate = new();
    private int _users = 1;
    private bool _freed;

    /// <summary>True once the last holder released the buffer (the owner's Dispose and every session's <see cref="Release"/>).</summary>
    internal bool Freed { get { lock (_gate) return _freed; } }

    /// <summary>
    /// Reads <paramref name="modelDir"/>'s model.safetensors into one native buffer. The parameters must be stored as F32
    /// under their own names (as export and train write them); other files are refused naming the tensor.
    /// With <paramref name="sharePrePacked"/> false each session keeps its own pre-packed copies (to measure what sharing saves).
    /// </summary>
    public SharedWeights(string modelDir, bool sharePrePacked = true)
    {
        _dir = Path.GetFullPath(modelDir);
        _file = Path.Combine(_dir, ModelFolder.WeightsFile);
        Parameters = ModelFolder.ReadParameters(modelDir);
        if (!File.Exists(_file)) throw new FileNotFoundException($"Model folder '{modelDir}' has no {ModelFolder.WeightsFile}.", _file);
        var locations = new (long Offset, long Length)[Parameters.Count];
        using (var f = SafeTensorsFile.Open(_file))
            for (int i = 0; i < Parameters.Count; i++)
            {
                var p = Parameters[i];
                if (!f.Contains(p.Name)) throw new InvalidDataException($"{_file}: checkpoint has no tensor '{p.Name}'.");
                var (type, shape) = f.Info(p.Name);
                if (!shape.SequenceEqual(p.Shape))
                    throw new InvalidDataException($"{_file}: tensor '{p.Name}' has shape [{string.Join(", ", shape)}], the model needs [{string.Join(", ", p.Shape)}].");
                if (type != DType.Float)
                    throw new InvalidDataException($"{_file}: tensor '{p.Name}' is {type.Name()}; a base shared by adapters must store its weights as F32 (as optimum-net export and train write them).");
                locations[i] = f.Location(p.Name);
            }
        _prepacked = sharePrePacked ? new PrePackedWeightsContainer() : null;                // after the checks: a refused file holds no native container
        long total = Parameters.Sum(p => (p.Count + 15) / 16 * 16);                          // each tensor 64-byte aligned
        _buffer = (IntPtr)NativeMemory.AlignedAlloc((nuint)Math.Max(64, total * sizeof(float)), 64);
        try
        {
            // Straight from the file into the native buffer: no managed copy of the weights (it would stay in the GC's heap).
            using var handle = File.OpenHandle(_file);
            long at = 0;
            for (int i = 0; i < Parameters.Count; i++)
            {
                var p = Parameters[i];
                var data = (float*)_buffer + at;
                var bytes = new Span<byte>(data, checked((int)locations[i].Length));
                for (int done = 0; done < bytes.Length;)
                {
                    int n = RandomAccess.Read(handle, bytes[done..], locations[i].Offset + done);
                    if (n == 0) throw new InvalidDataException($"{_file}: tensor '{p.Name}' ends early (truncated file?).");
                    done += n;
                }
                var values = new ReadOnlySpan<float>(data, (int)p.Count);
                int bad = values.IndexOfAnyExceptInRange(float.MinValue, float.MaxValue);
                if (bad >= 0)
                    throw new InvalidDataException($"{_file}: tensor '{p.Name}' holds {values[bad].ToString(System.Globalization.CultureInfo.InvariantCulture)} at element {bad}; weights must be finite.");
                _byName[p.Name] = (p, OrtValue.CreateTensorValueWithData(OrtMemoryInfo.DefaultInstance, TensorElementType.Float, p.Shape, (IntPtr)data, p.Count * sizeof(float)), locations[i].Offset);
                at += (p.Count + 15) / 16 * 16;
            }
        }
        catch
        {
            foreach (var (_, v, _) in _byName.Values) v.Dispose();
            NativeMemory.AlignedFree((void*)_buffer);
            _prepacked?.Dispose();
            throw;
        }
        Bytes = total * sizeof(float);
    }

    /// <summary>The parameters held, in the model folder's order.</summary>
    public IReadOnlyList<ParameterInfo> Parameters { get; }
    /// <summary>Bytes of the shared buffer.</summary>
    public long Bytes { get; }

    /// <summary>
    /// A session over <paramref name="model"/>, whose parameter inputs (graph inputs named as <see cref="Parameters"/>) become
    /// initializers backed by the shared buffer. <paramref name="model"/> is changed; <paramref name="options"/> gets the
    /// initializers and may be disposed after the call. Call <see cref="Release"/> after disposing the session.
    /// </summary>
    public InferenceSession Open(ModelProto model, SessionOptions options)
    {
        var graph = model.Graph;
        lock (_gate)
        {
            ObjectDisposedException.ThrowIf(_freed, this);
            var keep = graph.Input.Where(i => !_byName.ContainsKey(i.Name)).ToArray();
            graph.Input.Clear();
            graph.Input.AddRange(keep);
            FuseTransposedMatMuls(model);
            var used = graph.Node.SelectMany(n => n.Input).Where(_byName.ContainsKey).ToHashSet(StringComparer.Ordinal);
            foreach (var name in used.Order(StringComparer.Ordinal))
            {
                var (info, value, offset) = _byName[name];
                graph.Initializer.Add(External(name, info.Shape, offset));
                options.AddInitializer(name, value);
            }
            options.AddSessionConfigEntry("session.model_external_initializers_file_folder_path", _dir);
            EmbeddedWeights.ElideOutputIdentities(graph);
            _users++;
        }
        try { return _prepacked is null ? new InferenceSession(model.ToByteArray(), options) : new InferenceSession(model.ToByteArray(), options, _prepacked); }
        catch { Release(); throw; }
    }

    /// <summary>Says that a session made by <see cref="Open"/> was disposed.</summary>
    public void Release()
    {
        lock (_gate)
        {
            if (--_users > 0) return;
            Free();
        }
    }

    /// <summary>Gives up the owner's hold (once); sessions still open keep the buffer.</summary>
    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) == 0) Release();
    }

    private int _disposed;

    // MatMul(x, Transpose(W)) of a 2-D parameter W -> com.microsoft FusedMatMul(x, W, transB = 1): ORT pre-packs W itself
    // (shared through the container) instead of folding the transpose into a copy of W per session.
    private void FuseTransposedMatMuls(ModelProto model)
    {
        var graph = model.Graph;
        var transposeOf = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var n in graph.Node)
            if (n.OpType == "Transpose" && n.Domain is ("" or "ai.onnx") && n.Input.Count == 1 && _byName.TryGetValue(n.Input[0], out var p) && p.Info.Shape.Length == 2
                && n.Attribute.FirstOrDefault(a => a.Name == "perm")?.Ints.ToArray() is null or [1, 0])
                transposeOf[n.Output[0]] = n.Input[0];
        bool fused = false;
        foreach (var n in graph.Node)
        {
            if (n.OpType != "MatMul" || n.Domain is not ("" or "ai.onnx") || n.Input.Count != 2 || !transposeOf.TryGetValue(n.Input[1], out var w)) continue;
            n.OpType = "FusedMatMul";
            n.Domain = "com.microsoft";
            n.Input[1] = w;
            n.Attribute.Add(new AttributeProto { Name = "transB", Type = AttributeProto.Types.AttributeType.Int, I = 1 });
            fused = true;
        }
        if (!fused) return;
        var consumed = graph.Node.SelectMany(n => n.Input).Concat(graph.Output.Select(o => o.Name)).ToHashSet(StringComparer.Ordinal);
        var kept = graph.Node.Where(n => !(transposeOf.ContainsKey(n.Output.FirstOrDefault() ?? "") && !consumed.Contains(n.Output[0]))).ToArray();
        graph.Node.Clear();
        graph.Node.AddRange(kept);
        if (!model.OpsetImport.Any(o => o.Domain == "com.microsoft"))
            model.OpsetImport.Add(new OperatorSetIdProto { Domain = "com.microsoft", Version = 1 });
    }

    private TensorProto External(string name, long[] shape, long offset)
    {
        var t = new TensorProto { Name = name, DataType = (int)TensorProto.Types.DataType.Float, DataLocation = TensorProto.Types.DataLocation.External };
        t.Dims.AddRange(shape);
        string Num(long v) => v.ToString(System.Globalization.CultureInfo.InvariantCulture);
        t.ExternalData.Add(new StringStringEntryProto { Key = "location", Value = ModelFolder.WeightsFile });
        t.ExternalData.Add(new StringStringEntryProto { Key = "offset", Value = Num(offset) });
        t.ExternalData.Add(new StringStringEntryProto { Key = "length", Value = Num(shape.Aggregate(1L, (a, b) => a * b) * sizeof(float)) });
        return t;
    }

    private void Free()
    {
        if (_freed) return;
        _freed = true;
        foreach (var (_, v, _) in _byName.Values) v.Dispose();
        _prepacked?.Dispose();
        NativeMemory.AlignedFree((void*)_buffer);
    }

}
