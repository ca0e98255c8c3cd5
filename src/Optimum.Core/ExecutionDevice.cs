using System.Globalization;
using Microsoft.ML.OnnxRuntime;

namespace Optimum.Core;

/// <summary>Which hardware runs a model's sessions: the CPU, or one CUDA GPU through ONNX Runtime's CUDA execution provider.</summary>
public enum DeviceKind
{
    /// <summary>ONNX Runtime's CPU execution provider.</summary>
    Cpu,
    /// <summary>ONNX Runtime's CUDA execution provider (needs the CUDA native package and CUDA 13 / cuDNN 9 libraries).</summary>
    Cuda,
}

/// <summary>
/// A device as the command line writes it: <c>cpu</c>, <c>cuda</c> (device 0) or <c>cuda:N</c>. Asking for CUDA where its
/// provider or libraries cannot load is an error (<see cref="DeviceUnavailableException"/>), never a silent CPU run.
/// </summary>
public readonly record struct ExecutionDevice
{
    private ExecutionDevice(DeviceKind kind, int id) => (Kind, Id) = (kind, id);

    public DeviceKind Kind { get; }
    /// <summary>The CUDA device ordinal (0 for the CPU).</summary>
    public int Id { get; }

    public static ExecutionDevice Cpu => default;

    /// <summary>CUDA device <paramref name="id"/> (0-based, as CUDA_VISIBLE_DEVICES numbers them).</summary>
    public static ExecutionDevice Cuda(int id = 0) =>
        id >= 0 ? new(DeviceKind.Cuda, id) : throw new ArgumentOutOfRangeException(nameof(id), id, $"A CUDA device number must be >= 0, got {id}.");

    public bool IsCuda => Kind == DeviceKind.Cuda;

    /// <summary>Parses cpu, cuda or cuda:N; <paramref name="what"/> names the source in the error (e.g. "--device").</summary>
    public static ExecutionDevice Parse(string text, string what = "device")
    {
        var t = text.Trim().ToLowerInvariant();
        if (t == "cpu") return Cpu;
        if (t == "cuda") return Cuda(0);
        if (t.StartsWith("cuda:", StringComparison.Ordinal)
            && int.TryParse(t.AsSpan(5), NumberStyles.None, CultureInfo.InvariantCulture, out var id))
            return Cuda(id);
        throw new ArgumentException($"{what} '{text}' is not a device: expected cpu, cuda or cuda:N with N a device number >= 0.");
    }

    public override string ToString() => IsCuda ? $"cuda:{Id}" : "cpu";

    /// <summary>The ONNX Runtime provider name of a CUDA device.</summary>
    public const string CudaProvider = "CUDAExecutionProvider";

    /// <summary>
    /// Throws <see cref="DeviceUnavailableException"/> when this build of ONNX Runtime has no provider for the device (the CPU
    /// always has one), or when the CUDA provider's library cannot load, naming every missing CUDA library. Whether the GPU
    /// itself is there is only known when a session appends the provider.
    /// </summary>
    public void EnsureAvailable()
    {
        if (!IsCuda) return;
        var providers = OrtEnv.Instance().GetAvailableProviders();
        if (!providers.Contains(CudaProvider))
            throw new DeviceUnavailableException(
                $"{this}: the CUDA execution provider is not in this build of ONNX Runtime (providers: {string.Join(", ", providers)}; " +
                "the CPU package Microsoft.ML.OnnxRuntime). Build the application with -p:OrtNative=cuda " +
                "(Microsoft.ML.OnnxRuntime.Gpu.Linux) and run it where CUDA 13 and cuDNN 9 are installed.");
        if (CudaLibraries.Problem() is { } problem) throw new DeviceUnavailableException($"{this}: {problem}.");
    }

    /// <summary>
    /// Adds this device's execution provider to <paramref name="options"/> (nothing for the CPU, whose provider is always
    /// there). <paramref name="tf32"/> sets the CUDA provider's <c>use_tf32</c> (null: ORT's default, on).
    /// </summary>
    public void AppendTo(SessionOptions options, bool? tf32 = null)
    {
        if (!IsCuda) return;
        EnsureAvailable();
        try
        {
            using var cuda = new OrtCUDAProviderOptions();
            cuda.UpdateOptions(CudaOptions(tf32));
            options.AppendExecutionProvider_CUDA(cuda);
        }
        catch (OnnxRuntimeException e)
        {
            // The libraries loaded (EnsureAvailable), so this is the device itself: no GPU N, no driver, a CUDA error.
            throw new DeviceUnavailableException(
                $"{this}: the CUDA execution provider could not be loaded: {e.Message.Trim()} " +
                $"(is there a GPU {Id} with its driver, and cuDNN 9 on the library path?).", e);
        }
    }

    /// <summary>The CUDA provider options this device is appended with: its ordinal and, when given, <c>use_tf32</c>.</summary>
    public Dictionary<string, string> CudaOptions(bool? tf32 = null)
    {
        var o = new Dictionary<string, string> { ["device_id"] = Id.ToString(CultureInfo.InvariantCulture) };
        if (tf32 is { } t) o["use_tf32"] = t ? "1" : "0";
        return o;
    }
}

/// <summary>A device was asked for that this build or this machine cannot provide.</summary>
public sealed class DeviceUnavailableException(string message, Exception? inner = null) : InvalidOperationException(message, inner);
