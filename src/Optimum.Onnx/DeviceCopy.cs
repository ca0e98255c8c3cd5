using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;
using Optimum.Core;
using Optimum.Onnx.Proto;

namespace Optimum.Onnx;

/// <summary>
/// Copies float32 tensors between host and device memory (or within either) by running an Identity graph on the device with
/// both ends bound through IoBinding: ONNX Runtime moves the data as it does for any bound input or output. Works with the
/// classic CUDA provider appended to session options, which registers no data transfer with the environment (what
/// <c>OrtEnv.CopyTensors</c> needs). Owns its session; not thread-safe.
/// </summary>
public sealed class DeviceCopy : IDisposable
{
    private readonly InferenceSession _session;
    private readonly OrtIoBinding _binding;
    private readonly RunOptions _run = new();

    /// <summary>A copier on <paramref name="settings"/>' device.</summary>
    public DeviceCopy(SessionSettings settings)
    {
        // Identity over a float tensor of any shape (the input declares no shape), written as the proto directly.
        static ValueInfoProto Float(string name) => new() { Name = name, Type = new TypeProto { TensorType = new TypeProto.Types.Tensor { ElemType = (int)DType.Float } } };
        var graph = new GraphProto { Name = "device_copy" };
        graph.Input.Add(Float("x"));
        graph.Output.Add(Float("y"));
        graph.Node.Add(new NodeProto { OpType = "Identity", Name = "copy", Input = { "x" }, Output = { "y" } });
        var model = new ModelProto { IrVersion = OnnxVersions.IrVersion, Graph = graph, ProducerName = "optimum-net" };
        model.OpsetImport.Add(new OperatorSetIdProto { Domain = "", Version = OnnxVersions.Opset });
        using var options = settings.CreateOptions();
        _session = new InferenceSession(Google.Protobuf.MessageExtensions.ToByteArray(model), options);
        try { _binding = _session.CreateIoBinding(); }
        catch
        {
            _session.Dispose();
            throw;
        }
    }

    /// <summary>A session on the device (e.g. for its allocator: <c>new OrtAllocator(copy.Session, memoryInfo)</c>).</summary>
    public InferenceSession Session => _session;

    /// <summary>Copies <paramref name="from"/> into <paramref name="to"/> (float32 tensors of the same shape, anywhere ORT can bind them).</summary>
    public void Copy(OrtValue from, OrtValue to)
    {
        try
        {
            _binding.BindInput("x", from);
            _binding.BindOutput("y", to);
            _session.RunWithBinding(_run, _binding);
            _binding.SynchronizeBoundOutputs();
        }
        finally
        {
            // A binding holds its own reference to what it was given: cleared, so that a tensor the caller disposes (and the
            // allocator it came from) is not kept, and later released, by this copier.
            _binding.ClearBoundInputs();
            _binding.ClearBoundOutputs();
        }
    }

    /// <summary>Copies <paramref name="count"/> floats from <paramref name="from"/> (in <paramref name="fromMemory"/>) to <paramref name="to"/> (in <paramref name="toMemory"/>).</summary>
    public void Copy(OrtMemoryInfo fromMemory, nint from, OrtMemoryInfo toMemory, nint to, long count)
    {
        if (count < 0) throw new ArgumentOutOfRangeException(nameof(count), count, "A copy needs a length >= 0.");
        if (count == 0) return;
        using var x = OrtValue.CreateTensorValueWithData(fromMemory, TensorElementType.Float, [count], from, count * sizeof(float));
        using var y = OrtValue.CreateTensorValueWithData(toMemory, TensorElementType.Float, [count], to, count * sizeof(float));
        Copy(x, y);
    }

    public void Dispose()
    {
        _binding.Dispose();
        _session.Dispose();
        _run.Dispose();
    }
}
