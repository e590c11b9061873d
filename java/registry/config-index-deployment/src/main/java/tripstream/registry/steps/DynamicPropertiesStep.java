package tripstream.registry.steps;

import java.util.ArrayList;
import java.util.List;

import org.eclipse.microprofile.config.inject.ConfigProperty;
import org.jboss.jandex.AnnotationInstance;
import org.jboss.jandex.AnnotationValue;
import org.jboss.jandex.DotName;

import apicurio.common.app.components.config.index.DynamicPropertiesInfoRecorder;
import io.apicurio.common.apps.config.Dynamic;
import io.apicurio.common.apps.config.DynamicConfigPropertyDef;
import io.apicurio.common.apps.config.DynamicConfigPropertyList;
import io.quarkus.arc.deployment.BeanDiscoveryFinishedBuildItem;
import io.quarkus.arc.deployment.SyntheticBeanBuildItem;
import io.quarkus.arc.processor.InjectionPointInfo;
import io.quarkus.deployment.annotations.BuildProducer;
import io.quarkus.deployment.annotations.BuildStep;
import io.quarkus.deployment.annotations.ExecutionTime;
import io.quarkus.deployment.annotations.Record;

/**
 * The build step of the registry's "config index" extension, written for tripstream.
 *
 * <p>Apicurio Registry 2.4 injects a {@link DynamicConfigPropertyList} bean: the settings it may
 * change at run time, each a field annotated {@code @ConfigProperty} and {@code @Dynamic}. Quarkus
 * builds that bean at build time from the injection points, in an extension's "deployment"
 * artifact; Maven Central serves the extension's runtime artifact and its recorder but not this
 * one, so the registry could not be assembled. This step gathers the same list from the bean
 * index and hands it to the runtime recorder.
 */
public class DynamicPropertiesStep {

    private static final DotName CONFIG_PROPERTY = DotName.createSimple(ConfigProperty.class.getName());
    private static final DotName DYNAMIC = DotName.createSimple(Dynamic.class.getName());

    @BuildStep
    @Record(ExecutionTime.RUNTIME_INIT)
    void dynamicProperties(DynamicPropertiesInfoRecorder recorder, BeanDiscoveryFinishedBuildItem beans,
                           BuildProducer<SyntheticBeanBuildItem> produced) throws ClassNotFoundException {
        List<DynamicConfigPropertyDef> found = new ArrayList<>();
        for (InjectionPointInfo point : beans.getInjectionPoints()) {
            if (isDynamic(point)) {
                found.add(describe(point));
            }
        }
        produced.produce(SyntheticBeanBuildItem.configure(DynamicConfigPropertyList.class)
                .runtimeValue(recorder.initializePropertiesInfo(found))
                .unremovable()
                .setRuntimeInit()
                .done());
    }

    /** A field carrying both {@code @ConfigProperty} and {@code @Dynamic}. */
    private static boolean isDynamic(InjectionPointInfo point) {
        return point.isField()
                && point.getRequiredQualifier(CONFIG_PROPERTY) != null
                && point.getTarget().asField().annotation(DYNAMIC) != null;
    }

    /** Name, value type (the Supplier's argument), default, and the optional label, description
     * and prerequisites of one dynamic setting. A dynamic setting without a default is an error
     * in the application, reported at build time. */
    private static DynamicConfigPropertyDef describe(InjectionPointInfo point) throws ClassNotFoundException {
        AnnotationInstance property = point.getRequiredQualifier(CONFIG_PROPERTY);
        AnnotationInstance dynamic = point.getRequiredQualifier(DYNAMIC);
        String name = property.value("name").asString();
        AnnotationValue fallback = property.value("defaultValue");
        if (fallback == null) {
            throw new IllegalStateException("dynamic setting " + name + " has no default value");
        }
        String valueType = point.getRequiredType().asParameterizedType().arguments().get(0).name().toString();
        DynamicConfigPropertyDef def = new DynamicConfigPropertyDef(name, Class.forName(valueType), fallback.asString());
        if (dynamic != null) {
            AnnotationValue label = dynamic.value("label");
            AnnotationValue description = dynamic.value("description");
            AnnotationValue requires = dynamic.value("requires");
            if (label != null) {
                def.setLabel(label.asString());
            }
            if (description != null) {
                def.setDescription(description.asString());
            }
            if (requires != null) {
                def.setRequires(requires.asStringArray());
            }
        }
        return def;
    }
}
