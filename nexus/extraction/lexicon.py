"""Spanish (and some English) vocabulary for the rules extractor, written *folded*.

Every pattern here is matched against folded text: lower case, accents removed (``inversión``
-> ``inversion``, ``ñ`` -> ``n``), so one spelling covers the ways visitors type a word.
Weights of archetype cues: 3 = states the situation outright, 2 = a strong cue, 1 = a hint.
"""


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


#: Rubric intent cues (SPEC section 6: "quiero", "empezar", "inversión" and the like).
INTENT = (
    r"quiero|kiero|quisiera|me interesa|me interesaria|me gustaria|me encantaria|busco|deseo",
    r"necesito algo|me apunto|cuenten conmigo|quiero ser parte",
    r"empezar|comenzar|iniciar|arrancar|unirme|inscribirme|registrarme|sumarme",
    r"invertir|inversion|cuando empiezo|como me uno",
    # Asking how to join, or saying yes to it, is intent too.
    r"me anoto|me sumo|me uno|me inscribo|como me (?:inscribo|registro|anoto|apunto|sumo)",
    r"donde (?:firmo|me inscribo|me registro)|como (?:hago|le hago) (?:para|pa) (?:empezar|entrar"
    r"|unirme|inscribirme|arrancar)|que necesito (?:para|pa) (?:empezar|entrar|arrancar)",
    r"quiero (?:entrar|entrarle)|le entro|entrarle|arranquemos|empecemos|hagamoslo|vamos con todo",
    r"count me in|let'?s do it|what do i need",
    r"i want|i'?m interested|interested in|sign me up",
    # Intensified interest: "me re interesa", "súper interesada", "interesadísimo".
    r"me (?:re|super|muy|mega|recontra|requete|bastante|mucho|realmente)(?: super)? interesa",
    r"(?:estoy |ando |quede |me quede )?(?:super|re|muy|mega|recontra|bien|bastante|sumamente"
    r"|realmente|full|super ?duper) ?interesad[oa]s?|interesadisim[oa]s?",
)
#: "No me interesa" and its equivalents: the rubric's -3.
REJECTION = (
    r"no me interesa|no estoy interesad[oa]|no nos interesa|not interested",
    r"no quiero saber nada|dejen de (?:mandarme|escribirme|molestar)|dejenme en paz",
    r"no me escriban mas|no me contacten",
)

#: An objection is a concern the visitor states about the offer.  For price that is a worry
#: about its cost ("muy caro", "no tengo plata", "¿no será muy caro?"); a neutral question
#: ("¿cuánto cuesta?", "precio?") asks for information and is not one.  The labels in
#: tests/data and the Claude prompt use the same definition.
OBJECTIONS = {
    "precio": (
        r"car[oa]s?|carisim[oa]s?|costos[oa]|expensive|pricey|too much money",
        r"(?:precio|costo|inscripcion|inversion|cuota|kit|paquete)s?(?: (?:de |del )?\w+)? "
        r"(?:me parece "
        r"|es |esta |son |estan |se ve |suena )?(?:muy |bastante |demasiado |un poco |medio |re )?"
        r"(?:alt[oa]s?|elevad[oa]s?|excesiv[oa]s?|fuerte)",
        r"broke|can'?t afford|no puedo pagar|no (?:podria|puedo) (?:pagar|invertir|costear)",
        # "el sueldo no me alcanza" is why they want extra income, not an objection to a price
        r"(?<!sueldo )(?<!sueldo ya )(?<!salario )(?<!salario ya )(?<!quincena )"
        r"(?<!pension )(?<!que gano )no me alcanza(?! el tiempo)",
        r"no tengo (?:tanto |mucho |el )?presupuesto|poco presupuesto|sin presupuesto"
        r"|no (?:lo|los) tengo",
        r"no tengo (?:con que|para pagar)|no (?:tengo|me alcanza) para (?:eso|tanto|pagar)",
        r"no tengo (?:ni )?(?:pa|para) (?:la inscripcion|el kit|eso|pagar|invertir)|no tengo ni pa",
        r"(?:no quiero|no puedo) gastar(?: \w+)? (?:mucho|tanto|mas)|mas (?:economico|barato)",
        r"(?:es|sale|seria|son) (?:mucho|demasiado)"
        r"(?! (?:mejor|mas|menos|mayor|peor|tiempo|gusto))",
        r"(?:me parece|es) (?:un pasote|una pasada|un robo|un abuso|una locura)",
        r"(?:lucas|pesos|euros|soles|dolares|mil|bolivares) no llego",
        r"(?:estoy|ando|estamos|andamos) (?:re |muy |medio |bien )?just[oa]s?(?! de tiempo)",
        r"(?:no quiero|no puedo) (?:volver a )?pagar|cort[oa] de (?:dinero|plata|lana)",
        r"(?:no tengo|sin|ni|poca|mucha|poner|no me sobra|no hay) (?:mucha |mucho |nada de |esa "
        r"|ese |tanta |tanto |la |el |los |suficiente |the |that )?"
        r"(?:dinero|plata|lana|pasta|guita|money|cash|varo|varos|billete|pisto|lucas|feria|reales)",
        r"(?:no tengo|sin) (?:esa|tanta) (?:cantidad|suma)|no budget|out of budget",
        r"(?:ajustad|apretad|justit|quebrad|pelad)[oa]s? (?:de|con|en) (?:la |el |los |las )?"
        r"(?:dinero|plata|lana|pasta|guita|money|cash|varo|billete|pisto|lucas|feria|reales"
        r"|presupuesto|economia|bolsillo|gastos|quincena)",
        r"(?:estoy|ando|estamos|andamos) (?:medio |muy |bien |super |re |un poco )?(?:quebrad[oa]s?"
        r"|ajustad[oa]s? (?:economicamente|de bolsillo)|sin un (?:peso|centavo|sol|duro|mango))",
        r"si (?:es|sale|cuesta|son|pide|piden) (?:mucho|muy car[oa]|demasiado|bastante)"
        r"(?: (?:dinero|plata|lana))?,? (?:no (?:puedo|podria|me alcanza|llego|voy a poder)|paso)",
        r"(?:es|sale|seria) (?:mucho|demasiado) (?:para|pa) mi|es bastante (?:para|pa) mi",
    ),
    "tiempo": (
        r"no tengo (?:mucho |nada de |el |ni |casi |ni un poco de )?(?:tiempo|time|chance)",
        r"sin tiempo|poco tiempo libre|(?:tengo|queda|dispongo de|me deja) (?:muy )?poco tiempo",
        r"no me queda (?:nada de |casi |mucho |ni un poco de )?tiempo|cero tiempo|me falta tiempo",
        r"falta de tiempo|no me da (?:la vida|chance)|no doy abasto|no tengo (?:ni )?un rato",
        r"(?:mi|con mi|por mi|el) horario(?: \w+)? (?:es |esta |son |me lo hace )?"
        r"(?:imposible|complicad[oa]|dificil|pesad[oa]|apretad[oa]|loc[oa]|fatal)",
        r"(?:con|por) (?:mi|el) horario no|el problema es el tiempo|(?:estoy|ando) (?:a )?full",
        r"no me da el tiempo|no me alcanza el tiempo|ocupad[oa]s?|me absorbe|agenda llena",
        r"tiempo no tengo|no me queda tiempo|no tengo ni un minuto|sin un minuto libre",
        r"busy|no time|(?:don'?t|do not) have (?:the |much )?time|a full|a tope|sin descanso",
        r"short on time|not enough time",
        r"(?:el )?tiempo (?:muy |re |bastante |super )?(?:justo|limitado|contado|apretado)",
    ),
    "confianza": (
        r"estafa\w*|fraude\w*|engan(?:o|os|ar|an|aron|ado|ada|ados|adas|oso|osa)|timo|ladron\w*",
        r"scam\w*|legit|tim(?:aron|ado|ada|ador|adores|ar)|vende ?humos?|chant(?:a|as|ada)",
        r"chanchullo\w*|trucho\w*|tranza\w*|transa|charlatan\w*|embauca\w*|cuentero\w*",
        r"cuento chino|puro humo|sketchy|shady|sounds fake",
        r"no confio|desconfio|desconfianza|no me fio|no me convence|no me da confianza",
        r"(?:es|sera|esto es|son) (?:legal|legales|seguro|real|reales|confiable)",
        r"farsa|mentira\w*|trampa|sospechos[oa]|dudos[oa]|no (?:les|te|le|se los) creo",
        r"no creo en|es un cuento|(?:don'?t|do not) trust",
        r"comprobar|verificar|quienes son ustedes|tienen ruc|fake",
        r"demasiado bueno para ser verdad|too good to be true",
    ),
    "mlm": (
        r"multinivel\w*|multi-nivel\w*|piramid\w*|mlm|network marketing|esquemas?",
        r"red de gente|gente debajo|pyramid schemes?|ponzi",
        r"reclutar\w*|ganan los de arriba|herbalife|vender(?:le)? a (?:mis|tus) amig\w+",
        r"vendiendo a (?:mis|tus) amig\w+",
        r"amway|reclutando|armar redes|meter gente|meta gente|gente abajo|gente debajo",
    ),
}

_SHOP = (
    r"tienda|negocio|negocito|negosio|empresa|ferreteria|bodega|panaderia|restaurante|bar"
    r"|distribuidora|minimarket|taller|local|cafeteria|peluqueria|farmacia|puesto|kiosco"
    r"|quiosco|pulperia|almacen|colmado|tiendita|papeleria|libreria|carniceria|verduleria"
    r"|floreria|boutique|lavanderia|salon de belleza|estetica|fonda|cocina economica|food truck"
    r"|taqueria|pizzeria|heladeria|pasteleria|comedor|cevicheria|polleria|cafe|hotel|hostal"
)
ARCHETYPES = {
    "emprendedor_dueno_negocio": (
        (3, rf"(?:tengo|manejo|atiendo) (?:un|una|mi) (?:pequen[oa] )?(?:{_SHOP})"),
        (2, r"mi (?:negocio|negocito|negosio|empresa|tienda|local|emprendimiento)"),
        (2, r"duen[oa]|emprendedor[a]?|emprendimiento|pyme|comerciante|i own a|mis empleados"),
        (1, rf"negocio|negosio|{_SHOP}|abarrotes|bakery|clientela"),
    ),
    "profesional_vision": (
        (2, r"ingenier[oa]|abogad[oa]|contador[a]?|medic[oa]|doctor[a]?|cirujan[oa]"),
        (2, r"enfermer[oa]|nurse|arquitect[oa]|profesor[a]?|maestr[oa]|docente|licenciad[oa]"),
        (2, r"odontolog[oa]|dentista|psicolog[oa]|veterinari[oa]|economista|periodista"),
        (2, r"tecnic[oa]|secretari[oa]|cajer[oa]|meser[oa]|chofer|policia|operari[oa]"),
        (2, r"engineer|developer|lawyer|accountant|teacher|analista|supervisor[a]?"),
        (2, r"profesion|profesional|administrativ[oa]|gerente|emplead[oa]|ejecutiv[oa]"),
        (2, r"trabajo (?:de|como) \w+|sueldo|salario|quincena|mi trabajo"),
        (2, r"trabajo en (?:un|una) (?:firma|banco|constructora|hospital|oficina|gestoria)"),
        (2, r"recepcionista|vigilante|guardia de seguridad|obrer[oa]|maestro de obra|auxiliar"),
        (2, r"asistente (?:administrativ[oa]|de \w+)|call center|conserje|bodeguer[oa]|soldador"),
        (2, r"contador[a]? public[oa]|funcionari[oa]|asalariad[oa]|trabajo de planta"),
        (1, r"oficina|mi jefe|despacho|turnos|colegas|firma|hospital|banco|consulta|fintech"),
    ),
    "lider_hogar": (
        (3, r"ama de casa|amo de casa|madre soltera|padre soltero|me dedico al hogar"),
        (2, r"(?:mama|madre|papa|padre) de (?:dos|tres|cuatro|cinco|\d)|cuido a mis|mis chamacos"),
        (2, r"mama|madre|papa|abuela|abuelo|hogar|mis hij[oa]s|mis ninos|mis nietos"),
        (2, r"mis bebes|gemelos|mellizos|mi familia|cuido a"),
        (1, r"hij[oa]s|ninos|ninas|nietos|bebes|esposo|marido|familia|en casa|desde casa"),
    ),
    "joven_ambicion": (
        (3, r"estudiante|universitari[oa]|estoy estudiando|estudio en (?:la|el)"),
        (2, r"estudiando|en la (?:u|uni|facu)|el sena|instituto|ultimo ciclo|ciclo de"),
        (2, r"estudio|universidad|uni|facu|facultad|colegio|mis papas|primer trabajo"),
        (2, r"high school|college|secundaria|prepa|preparatoria|semestre|bachillerato"),
        (2, r"tengo (?:1[5-9]|2[0-4])(?: anos)?|i'?m (?:1[89]|2[0-4])|recien (?:sali|egresad[oa])"),
        (1, r"joven|clases|examenes|(?:1[5-9]|2[0-4]) anos|carrera|my mom|mi mama dice"),
    ),
    "independiente_freelancer": (
        (3, r"freelance\w*|por mi cuenta|independiente"),
        (
            2,
            r"manejo (?:uber|didi|taxi|un taxi|cabify|moto)|taxi por (?:app|aplicativo|aplicacion)",
        ),
        (2, r"conductor[a]? de (?:uber|app|aplicativo|plataforma)|uber|didi|rappi|doordash"),
        (
            2,
            r"repartidor[a]?|domiciliari[oa]|deliver(?:y|ies)|vendo (?:por|en) (?:instagram"
            r"|facebook|redes|whatsapp|internet)|vendo ropa",
        ),
        (2, r"consultor[a]?|disenador[a]?|fotograf[oa]|traductor[a]?|programador[a]?"),
        (2, r"community manager|edicion de videos|editor[a]? de video|por proyectos"),
        (
            2,
            r"ilustrador[a]?|artesan[oa]|carpinter[oa]|por catalogo|por encargo|encargos?"
            r"|para mi mism[oa]|cuenta propia|oficios?",
        ),
        (2, r"mis clientes|mis clientas|clientas fijas|clientes fijos|self-employed"),
        (1, r"clientes|clientas|remoto|remote|marcas|vendedor[a]?"),
    ),
    "lider_comunidad": (
        (2, r"comunidad|comunitari[oa]|lider|lidero|lidera|iglesia|parroquia|pastor[a]?"),
        (2, r"voluntari[oa]s|asociacion|organizo|coordino|seguidores|entrenador[a]?"),
        (2, r"president[ea]|influencer|fundacion|ong|dirijo|catecismo|catequesis"),
        (2, r"ministerio|llevo un grupo|mi grupo|mi gente|lideresa|dirigente"),
        (2, r"junta de vecinos|junta (?:de accion )?comunal|grupo de (?:jovenes|senoras|mujeres)"),
        (1, r"grupo de|equipo de|vecinos|barrio|colonia|junta"),
    ),
}

#: Occupations recognised after "soy" / "trabajo como" (kept as typed in ``ocupacion``).
OCCUPATIONS = (
    r"ingenier[oa](?: \w+)?|abogad[oa]|contador[a]?(?: public[oa])?|medic[oa](?: cirujan[oa])?"
    r"|enfermer[oa]|arquitect[oa]|profesor[a]?(?: de \w+)?|maestr[oa]|docente|disenador[a]?"
    r"(?: grafic[oa])?|fotograf[oa]|traductor[a]?|programador[a]?|consultor[a]?|estudiante"
    r"|ama de casa|administrativ[oa]|comerciante|emprendedor[a]?|community manager|nurse"
    r"|tecnic[oa]|secretari[oa]|cajer[oa]|meser[oa]|chofer|policia|operari[oa]|vendedor[a]?"
    r"|mecanic[oa]|albanil|electricista|plomer[oa]|cociner[oa]|chef|panader[oa]|costurer[oa]"
    r"|peluquer[oa]|estilista|carpinter[oa]|agricultor[a]?|campesin[oa]|pensionad[oa]"
    r"|jubilad[oa]|dentista|psicolog[oa]|veterinari[oa]|periodista|economista|analista"
    r"|freelancer?|desarrollador[a]?|developer|teacher|doctor[a]?|recepcionista|vigilante"
    r"|taxista|conductor[a]?|repartidor[a]?|domiciliari[oa]|obrer[oa]|auxiliar(?: de \w+)?"
    r"|asistente(?: de \w+)?|funcionari[oa]|maestro de obra"
)

#: Phrases that make "soy X" / a reply not a name (folded).  Titles are skipped instead.
NOT_NAMES = _words(
    """de del la el los las un una muy nuevo nueva yo tu su mi no si ok hola buenas buenos
    eso esto este esta aqui alli nada nadie alguien todo mama madre papa padre abuela abuelo
    hijo hija estudiante persona cliente socio socia amigo amiga fan gracias claro bueno dale
    vale perfecto listo jaja jeje jajaja gente senor senora profe quien que como dios
    ustedes usted nosotros todos todas nuevo nueva nuevos interesado interesada curioso
    curiosa casado casada soltero soltera viudo viuda joven mayor timido timida presente
    otro otra alguno alguna sigo ando paso pregunto escribo comento entro llego vine
    seguimos estamos andamos anyone someone everyone nobody hello hi hey me just"""
)
TITLES = _words(
    """hermana hermano sr sra srta don dona dr dra doctor doctora ing lic licenciado
    licenciada pastor pastora profesor profesora sor padre mtro mtra arq abg mr mrs ms pbro
    profe inge doc"""
)
#: Words that end a name typed in lower case ("me llamo ana y quiero ...").
STOP_WORDS = _words(
    """y e pero que soy tengo quiero estoy vivo trabajo from and desde en con mi me para por a
    al de del les los las le la el un una busco necesito tambien aqui ahi tenia vengo estudio
    es era fue i im not no si gracias porfa favor este esta jaja kiero qiero info"""
)
#: Common first names, so a name typed in lower case after "soy" or as a bare reply counts.
FIRST_NAMES = _words(
    """juan jose luis carlos jorge pedro miguel angel david daniel diego andres felipe
    alejandro fernando francisco javier manuel antonio ricardo roberto eduardo sergio pablo
    raul ramon hector oscar mario alberto gustavo martin matias sebastian tomas nicolas
    santiago mateo samuel kevin cristian christian jesus rafael enrique victor hugo ivan
    esteban ernesto gabriel emilio adrian alvaro ruben julio cesar marco marcos renzo
    maria ana lucia sofia valentina camila isabella daniela gabriela paula carmen laura
    andrea patricia rosa elena marta pilar natalia carolina claudia monica sandra veronica
    adriana alejandra fernanda guadalupe lupita yesenia ximena valeria mariana juliana
    catalina luciana julia silvia teresa beatriz rocio marisol andreina lorena paola
    karina diana susana gloria luz esperanza margarita sara alicia irene cristina nuria
    nico pili pepe paco pancho lupe memo chuy beto lalo quique nacho rafa toni dani
    juanita mari maite charo conchi maru lola"""
)
#: Words that may follow "de" / "del" / "de los" inside a name typed in lower case
#: ("maria de los angeles", "juan de la cruz"); elsewhere "de" ends a lower-case name
#: ("soy juan de lima").
NAME_TAILS = _words(
    """angeles carmen jesus rosario cruz paz pilar mercedes fatima guadalupe lourdes luz mar
    socorro rocio dolores consuelo soledad remedios milagros montserrat asuncion concepcion
    belen lujan torre fuente vega hoz rosa santos rios leon castillo valle"""
)
#: Words a bare reply to "¿cómo te llamas?" may hold that are not names, so a lower-case
#: two-word reply like "cuentame primero" is not taken as one.
NOT_REPLY_NAMES = _words(
    """primero despues luego mejor nomas info informacion pregunta porque cuanto cuando donde
    bien mal todavia aun tampoco prefiero paso secreto anonimo anonima nombre apellido
    mas menos solo sola solamente ahora hoy manana ayer rapido despacio igual nada ninguno
    quiero puedo puede decir digo saber ver veo mira oye oiga perdon disculpa sorry broma
    cuesta vale sale precio gratis verdad mentira seguro segura ya listo lista sale bye chao
    interesante genial excelente obvio exacto cierto entiendo igualmente gusto encantado
    encantada okey okay sip nop nope aja mmm hmm ahh buenas buenos saludos chevere bacano chido
    gracias hola si no ok dale bueno claro perfecto vale porfa ayuda empezar"""
)
#: Someone else's relation to the visitor: a number "de mi vecina" is not the visitor's.
RELATIONS = (
    r"vecin[oa]s?|amig[oa]s?|espos[oa]|marido|mujer|novi[oa]|pareja|mama|mami|papa|papi|madre"
    r"|padre|herman[oa]s?|hij[oa]s?|prim[oa]s?|ti[oa]s?|abuel[oa]s?|suegr[oa]|cunad[oa]"
    r"|sobrin[oa]|nuera|yerno|jef[ea]|compa|companer[oa]s?|soci[oa]|comadre|compadre"
    r"|conocid[oa]|colega|cliente|clienta|senora|senor|muchach[oa]|chic[oa]|cuate|parce"
)
#: Kinds of number, to honour "mejor el cel" among a mobile and a home number.
MOBILE_KINDS = _words("cel celu celular movil whatsapp whats wsp wasap wpp personal")
LANDLINE_KINDS = _words("casa fijo oficina trabajo local negocio tienda")

#: Words that may come just before a spelled-out address ("mi correo es ana punto ...").
#: After any other word the local part may have begun earlier ("andres lopez arroba ..."),
#: so the rules take no address rather than a partial one.
EMAIL_LEAD = _words(
    """es correo email mail e-mail gmail mi a al en is to me seria y o tambien escribeme
    escribenos mandame enviame manda envia mandalo address direccion electronico emails
    at info pls porfa"""
)
#: An assistant question asking for the visitor's name: the next visitor reply may be it.
NAME_QUESTION = (
    r"como te llamas|como se llama|tu nombre|su nombre|your name|con quien tengo el gusto"
    r"|a quien tengo el gusto|con quien (?:hablo|hablamos|me comunico|tengo el placer)"
    r"|como te (?:digo|llamo|dicen|puedo (?:llamar|decir))|como le (?:digo|llamo|puedo decir)"
    r"|a nombre de quien|de parte de quien|(?:cual es )?(?:tu|su) gracia|quien (?:eres|me escribe)"
    r"|who am i (?:talking|speaking) (?:to|with)|what should i call you"
)
